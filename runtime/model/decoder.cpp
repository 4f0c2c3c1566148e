#include "runtime/model/decoder.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>
#include <tuple>
#include <vector>

#include "parallel/tensor_parallel/mappings.h"
#include "parallel/tensor_parallel/vocab_parallel.h"
#include "runtime/core/check.h"
#include "runtime/model/spec.h"

namespace secateur::model {

namespace {

// x [..., D] -> [x2, x1], its halves swapped: times the signed sine [-sin, sin] this is HF's
// rotate_half(x) · sin, bit for bit, in one copy instead of a negation and a concatenation.
at::Tensor swap_halves(const at::Tensor& x) {
  std::vector<int64_t> halves = x.sizes().vec();
  halves.back() /= 2;
  halves.insert(halves.end() - 1, 2);
  return x.reshape(halves).roll(1, -2).reshape(x.sizes());
}

// at::linear, except for one bfloat16 row on the CPU (a batch-1 decode step): there oneDNN, which
// at::linear picks for bfloat16, repacks the whole weight on every call, and MKL's bfloat16 gemv
// (what ATen falls back to with oneDNN off) reads it 2-3x faster. Same fp32 accumulation either way.
at::Tensor fast_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {}) {
  if (x.scalar_type() != at::kBFloat16 || !x.is_cpu() || x.numel() != x.size(-1)) return at::linear(x, w, b);
  struct OneDnnOff {                                    // the switch is global: restore it whatever happens
    bool was = at::globalContext().userEnabledMkldnn();
    OneDnnOff() { at::globalContext().setUserEnabledMkldnn(false); }
    ~OneDnnOff() { at::globalContext().setUserEnabledMkldnn(was); }
  } off;
  return at::linear(x, w, b);
}

// Appends this step's keys and values [B, KV, T, D] of layer l after the cached ones and returns
// all of them (views of the cache). The cache's buffers grow geometrically, so a decode step
// copies only its own token, not the whole past.
std::pair<at::Tensor, at::Tensor> append_kv(KVCache& cache, int64_t l, const at::Tensor& k, const at::Tensor& v) {
  at::Tensor& K = cache.k[l];
  at::Tensor& V = cache.v[l];
  const int64_t past = cache.length, n = past + k.size(2);
  if (!K.defined() || K.size(2) < n) {
    std::vector<int64_t> shape = k.sizes().vec();
    shape[2] = std::max(n, K.defined() ? 2 * K.size(2) : n);
    at::Tensor k2 = at::empty(shape, k.options()), v2 = at::empty(shape, v.options());
    if (past > 0) {
      k2.narrow(2, 0, past).copy_(K.narrow(2, 0, past));
      v2.narrow(2, 0, past).copy_(V.narrow(2, 0, past));
    }
    K = std::move(k2);
    V = std::move(v2);
  }
  K.narrow(2, past, k.size(2)).copy_(k);
  V.narrow(2, past, v.size(2)).copy_(v);
  return {K.narrow(2, 0, n), V.narrow(2, 0, n)};
}

}  // namespace

// Where each tensor of the spec lives in this Decoder.
at::Tensor* Decoder::slot(Role role, int64_t layer) {
  LayerWeights* w = layer >= 0 ? &layers_.at(layer) : nullptr;
  switch (role) {
    case Role::embed: return &embed_;
    case Role::positions: return &pos_embed_;
    case Role::norm_w: return &norm_w_;
    case Role::norm_b: return &norm_b_;
    case Role::lm_head: return &lm_head_;
    case Role::ln1_w: return &w->ln1_w;
    case Role::ln1_b: return &w->ln1_b;
    case Role::q_w: return &w->q_w;
    case Role::q_b: return &w->q_b;
    case Role::k_w: return &w->k_w;
    case Role::k_b: return &w->k_b;
    case Role::v_w: return &w->v_w;
    case Role::v_b: return &w->v_b;
    case Role::o_w: return &w->o_w;
    case Role::o_b: return &w->o_b;
    case Role::ln2_w: return &w->ln2_w;
    case Role::ln2_b: return &w->ln2_b;
    case Role::gate_w: return &w->gate_w;
    case Role::gate_b: return &w->gate_b;
    case Role::up_w: return &w->up_w;
    case Role::up_b: return &w->up_b;
    case Role::down_w: return &w->down_w;
    case Role::down_b: return &w->down_b;
  }
  SECATEUR_FAIL("[model] no slot for a tensor role");
}

// Every weight of this rank's config (the spec's list, local shapes) and where it lives.
std::vector<Decoder::Slot> Decoder::slots() {
  std::vector<Slot> s;
  for (Weight& w : weights(local_)) {
    at::Tensor* t = slot(w.spec->role, w.layer);
    s.push_back({std::move(w.name), t, std::move(w.shape), w.spec->norm});
  }
  return s;
}

Decoder::Decoder(ModelConfig config, parallel::Group tp) : config_(std::move(config)), tp_(tp) {
  config_.validate();
  plan_ = ShardPlan::make(config_, tp_.rank(), tp_.size());
  local_ = plan_.local_config(config_);
  layers_.resize(config_.n_layers());
  adapters_.resize(config_.n_layers());
}

void Decoder::set_adapter(int64_t layer, Proj p, Adapter adapter) {
  SECATEUR_CHECK(layer >= 0 && layer < config_.n_layers(), "[model] adapter for layer {} of {}", layer,
                 config_.n_layers());
  adapters_[layer][static_cast<int>(p)] = std::move(adapter);
}

at::Tensor Decoder::project(int64_t l, Proj p, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
  at::Tensor y = fast_linear(x, w, b);
  const Adapter& ad = adapters_[l][static_cast<int>(p)];
  if (!ad.a.defined()) return y;
  at::Tensor xin = x;
  if (training_ && ad.dropout > 0) {
    std::vector<int64_t> whole = x.sizes().vec();
    int64_t first = 0;
    const TensorSpec& spec = *proj_spec(config_, p);
    if (spec.split == Split::row && !tp_.alone()) {     // x holds this rank's columns of the input
      whole.back() = extent(config_, spec.axes[1], l);
      first = plan_.slice_of(proj_weight(config_, l, p), config_).range.begin;
    }
    auto gen = at::make_generator<at::CPUGeneratorImpl>(dropout_seed_ * 1000003ull + l * 16 + static_cast<int>(p));
    const at::Tensor keep = at::empty(whole, x.options().device(at::kCPU).dtype(at::kFloat))
                                .bernoulli_(1.0 - ad.dropout, gen)
                                .narrow(-1, first, x.size(-1))
                                .to(x.device(), x.scalar_type());
    xin = x * keep / (1.0 - ad.dropout);
  }
  return y + at::linear(at::linear(xin, ad.a), ad.b) * ad.scale;
}

Decoder Decoder::with_random_weights(const ModelConfig& config, uint64_t seed, parallel::Group tp) {
  Decoder whole(config, nullptr);
  at::manual_seed(seed);
  for (Slot& s : whole.slots()) *s.tensor = s.norm ? 1 + 0.1 * at::randn(s.shape) : 0.08 * at::randn(s.shape);
  if (tp.alone()) return whole;
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, t] : whole.named_tensors()) by_name[name] = t;
  Decoder shard(config, tp);
  for (Slot& s : shard.slots()) {
    const at::Tensor& t = by_name.at(s.name);
    const auto cut = shard.plan_.slice_of(s.name, config);
    *s.tensor = cut.dim < 0 ? t.clone() : t.narrow(cut.dim, cut.range.begin, cut.range.size()).clone();
  }
  return shard;
}

Decoder::Decoder(ModelConfig config, const NamedTensors& tensors, parallel::Group tp)
    : Decoder(std::move(config), tp) {
  std::map<std::string, const at::Tensor*> by_name;
  for (const auto& [name, t] : tensors) by_name[name] = &t;
  for (Slot& s : slots()) {
    auto it = by_name.find(s.name);
    SECATEUR_CHECK(it != by_name.end(), "[model] missing weight '{}'", s.name);
    const at::Tensor& t = *it->second;
    SECATEUR_CHECK(t.sizes().vec() == s.shape, "[model] weight '{}' has shape {}, the config needs {}", s.name,
                   fmt::join(t.sizes().vec(), "x"), fmt::join(s.shape, "x"));
    *s.tensor = t;
  }
  const at::ScalarType dt = embed_.scalar_type();
  for (Slot& s : slots()) {
    SECATEUR_CHECK(s.tensor->scalar_type() == dt, "[model] weight '{}' is {}, the embedding is {}: cast them alike",
                   s.name, c10::toString(s.tensor->scalar_type()), c10::toString(dt));
  }
}

void Decoder::to(at::Device device, at::ScalarType dtype) {
  for (Slot& s : slots()) *s.tensor = s.tensor->to(device, dtype).contiguous();
}

NamedTensors Decoder::named_tensors() const {
  auto& self = const_cast<Decoder&>(*this);
  NamedTensors out;
  for (Slot& s : self.slots()) out.emplace_back(s.name, *s.tensor);
  return out;
}

std::vector<at::Tensor*> Decoder::parameters() {
  std::vector<at::Tensor*> out;
  for (Slot& s : slots()) out.push_back(s.tensor);
  return out;
}

at::Tensor Decoder::norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
  if (config_.family == Family::gpt2) return at::layer_norm(x, {config_.hidden}, w, b, config_.norm_eps);
  // RMSNorm as HF computes it: statistics in (at least) float32, then the weight in the model's dtype.
  // ATen's fused kernel computes x · rsqrt(mean(x²) + eps) in one pass, the same bits as the three
  // separate operations.
  const at::Tensor xf = x.to(at::promote_types(x.scalar_type(), at::kFloat));
  return w * at::rms_norm(xf, {config_.hidden}, {}, config_.norm_eps).to(x.scalar_type());
}

at::Tensor Decoder::attention(int64_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                              KVCache* cache, const Layout* layout) const {
  const LayerWeights& w = layers_[l];
  const int64_t B = x.size(0), T = x.size(1), H = local_.n_heads[l], KV = local_.n_kv_heads[l];
  const int64_t D = config_.head_dim;
  const auto add_bias = [&](const at::Tensor& y) { return w.o_b.defined() ? y + w.o_b : y; };
  if (config_.n_heads[l] == 0) return add_bias(at::zeros_like(x));               // every head pruned
  // No head on this rank: still take part in both collectives (forward sum, and the gradient
  // sum of copy_to_tp in backward), contributing zeros.
  if (H == 0) return add_bias(parallel::reduce_from_tp(parallel::copy_to_tp(x, tp_) * 0, tp_));
  const at::Tensor xin = parallel::copy_to_tp(x, tp_);
  tap(l, Tap::attn_in, xin);
  at::Tensor q = project(l, Proj::q, xin, w.q_w, w.q_b).view({B, T, H, D}).transpose(1, 2);    // [B, H, T, D]
  at::Tensor k = project(l, Proj::k, xin, w.k_w, w.k_b).view({B, T, KV, D}).transpose(1, 2);   // [B, KV, T, D]
  at::Tensor v = project(l, Proj::v, xin, w.v_w, w.v_b).view({B, T, KV, D}).transpose(1, 2);   // [B, KV, T, D]
  if (config_.family == Family::llama) {
    q = q * cos + swap_halves(q) * sin;               // sin is signed: see swap_halves
    k = k * cos + swap_halves(k) * sin;
  }
  int64_t past = 0;
  if (cache) {
    past = cache->length;
    std::tie(k, v) = append_kv(*cache, l, k, v);
  }
  // GQA: query head h reads kv-head h / (H / KV), which SDPA's enable_gqa does without copying
  // keys and values H / KV times.
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  at::Tensor out;
  if (layout) {
    out = at::scaled_dot_product_attention(q, k, v, layout->mask, 0.0, false, scale, KV != H);
  } else if (past == 0 || T == 1) {                  // one new token sees every key: no mask
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/past == 0 && T > 1, scale, KV != H);
  } else {                                           // query i sees keys 0..past+i
    const at::Tensor qi = at::arange(T, x.options().dtype(at::kLong)).unsqueeze(1) + past;
    const at::Tensor kj = at::arange(past + T, x.options().dtype(at::kLong)).unsqueeze(0);
    out = at::scaled_dot_product_attention(q, k, v, kj <= qi, 0.0, false, scale, KV != H);
  }
  out = out.transpose(1, 2).reshape({B, T, H * D});  // [B, T, H*D]
  tap(l, Tap::attn_out, out);
  return add_bias(parallel::reduce_from_tp(project(l, Proj::o, out, w.o_w, {}), tp_));
}

void Decoder::set_mlp_mask(int64_t layer, at::Tensor mask) {
  SECATEUR_CHECK(layer >= 0 && layer < config_.n_layers(), "[model] no layer {} to mask", layer);
  SECATEUR_CHECK(!mask.defined() || (mask.dim() == 1 && mask.size(0) == config_.d_ff[layer]),
                 "[model] layer {}: a neuron mask needs [{}] entries", layer, config_.d_ff[layer]);
  if (static_cast<int64_t>(mlp_masks_.size()) < config_.n_layers()) mlp_masks_.resize(config_.n_layers());
  mlp_masks_[layer] = std::move(mask);
}

at::Tensor Decoder::mlp(int64_t l, const at::Tensor& x) const {
  const LayerWeights& w = layers_[l];
  const auto add_bias = [&](const at::Tensor& y) { return w.down_b.defined() ? y + w.down_b : y; };
  if (config_.d_ff[l] == 0) return add_bias(at::zeros_like(x));                   // every neuron pruned
  if (local_.d_ff[l] == 0) return add_bias(parallel::reduce_from_tp(parallel::copy_to_tp(x, tp_) * 0, tp_));   // none here (see attention)
  const at::Tensor xin = parallel::copy_to_tp(x, tp_);
  tap(l, Tap::mlp_in, xin);
  at::Tensor m;                                                                  // this rank's neurons' mask
  if (l < static_cast<int64_t>(mlp_masks_.size()) && mlp_masks_[l].defined()) {
    m = mlp_masks_[l].narrow(0, plan_.layers[l].neurons.begin, local_.d_ff[l]).to(xin.scalar_type());
  }
  const auto masked = [&](const at::Tensor& y) { return m.defined() ? y * m : y; };
  at::Tensor h;
  if (config_.family == Family::llama) {
    h = at::silu(masked(project(l, Proj::gate, xin, w.gate_w, w.gate_b))) *
        masked(project(l, Proj::up, xin, w.up_w, w.up_b));
  } else if (m.defined() && w.up_b.defined()) {                                  // the bias masked, no gradient
    h = at::gelu(masked(project(l, Proj::up, xin, w.up_w, {})) + w.up_b * m.detach(), "tanh");
  } else {
    h = at::gelu(masked(project(l, Proj::up, xin, w.up_w, w.up_b)), "tanh");      // [B, T, d_ff_local]
  }
  h = masked(h);
  tap(l, Tap::mlp_hidden, h);
  return add_bias(parallel::reduce_from_tp(project(l, Proj::down, h, w.down_w, {}), tp_));
}

at::Tensor Decoder::hidden_states(const at::Tensor& ids, KVCache* cache, const Layout* layout) const {
  SECATEUR_CHECK(ids.dim() == 2, "[model] ids must be [B, T], got {} dims", ids.dim());
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t past = cache ? cache->length : 0;
  if (cache && cache->k.empty()) {
    cache->k.resize(config_.n_layers());
    cache->v.resize(config_.n_layers());
  }
  const at::TensorOptions opt = embed_.options();
  if (layout) {
    SECATEUR_CHECK(layout->positions.sizes() == ids.sizes() &&
                       layout->mask.sizes() == at::IntArrayRef({B, 1, T, past + T}),
                   "[model] a layout needs positions [{}, {}] and a mask [{}, 1, {}, {}]", B, T, B, T, past + T);
  }
  // Each token's position: [T] shared by the rows, or [B, T] from the layout.
  const at::Tensor pos = layout ? layout->positions.to(opt.device(), at::kLong)
                                : at::arange(past, past + T, opt.dtype(at::kLong));
  return layers(embed_positions(ids, pos, past, layout), 0, pos, cache, layout);
}

at::Tensor Decoder::embed_positions(const at::Tensor& ids, const at::Tensor& pos, int64_t past,
                                    const Layout* layout, bool sparse_grad) const {
  at::Tensor x = embed(ids, sparse_grad);                                           // [B, T, d]
  if (config_.family == Family::gpt2) {
    const int64_t B = ids.size(0), T = ids.size(1);
    const int64_t last = layout ? pos.max().item<int64_t>() + 1 : past + T;
    SECATEUR_CHECK(last <= config_.max_positions, "[model] {} positions exceed the model's {}", last,
                   config_.max_positions);
    x = x + (layout ? pos_embed_.index_select(0, pos.flatten()).view({B, T, -1}) : pos_embed_.narrow(0, past, T));
  }
  return x;
}

std::pair<at::Tensor, at::Tensor> Decoder::rope(const at::Tensor& pos, bool per_row) const {
  if (config_.family == Family::gpt2) return {};
  // RoPE tables as HF builds them: float32 angles (float64 for a float64 model), then cast.
  const at::TensorOptions opt = embed_.options();
  const int64_t D = config_.head_dim;
  const at::ScalarType angle = at::promote_types(opt.dtype().toScalarType(), at::kFloat);
  const at::Tensor inv_freq = 1.0 / at::pow(config_.rope_theta, at::arange(0, D, 2, opt.dtype(at::kLong)).to(angle) / D);
  const at::Tensor freqs = pos.to(angle).unsqueeze(-1) * inv_freq;       // [(B,) T, D/2]
  const at::Tensor c = freqs.cos(), s = freqs.sin();
  at::Tensor cos = at::cat({c, c}, -1).to(opt.dtype());                  // [(B,) T, D]
  at::Tensor sin = at::cat({-s, s}, -1).to(opt.dtype());                 // signed: see swap_halves
  if (per_row) return {cos.unsqueeze(1), sin.unsqueeze(1)};              // [B, 1, T, D] against [B, H, T, D]
  return {cos, sin};
}

at::Tensor Decoder::block(int64_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                          KVCache* cache, const Layout* layout) const {
  const LayerWeights& w = layers_[l];
  const at::Tensor y = x + attention(l, norm(x, w.ln1_w, w.ln1_b), cos, sin, cache, layout);
  return y + mlp(l, norm(y, w.ln2_w, w.ln2_b));
}

at::Tensor Decoder::layers(at::Tensor x, int64_t from, const at::Tensor& pos, KVCache* cache,
                           const Layout* layout) const {
  const auto [cos, sin] = rope(pos, layout != nullptr);
  SECATEUR_CHECK(!cache || skipped_.empty(), "[model] skipped layers and a KV cache do not go together");
  for (int64_t l = from; l < config_.n_layers(); ++l) {
    tap(l, Tap::residual, x);
    if (!skipped_.empty() && skipped_[l]) continue;
    x = block(l, x, cos, sin, cache, layout);
  }
  tap(config_.n_layers(), Tap::residual, x);
  if (cache) cache->length += x.size(1);
  return norm(x, norm_w_, norm_b_);
}

double Decoder::backward_checkpointed(const at::Tensor& ids, double scale) const {
  SECATEUR_CHECK(ids.dim() == 2 && ids.size(1) > 1, "[model] ids must be [B, T] with T >= 2");
  SECATEUR_CHECK(skipped_.empty(), "[model] the checkpointed backward runs every layer (none skipped)");
  const int64_t T = ids.size(1), L = config_.n_layers();
  const at::Tensor pos = at::arange(0, T, embed_.options().dtype(at::kLong));
  const auto [cos, sin] = rope(pos, false);
  std::vector<at::Tensor> xs;   // the residual stream entering each layer; xs[L]: the last layer's output
  {
    at::NoGradGuard no_grad;
    xs.push_back(embed_positions(ids, pos, 0, nullptr));
    for (int64_t l = 0; l < L; ++l) xs.push_back(block(l, xs.back(), cos, sin, nullptr, nullptr));
  }
  // The head first. A tied head is the embedding: its gradient goes into a stand-in leaf here and is
  // handed to the embedding before the lookup's backward, so the embedding's gradient is accumulated
  // (and its post-accumulate hooks run) once, with both parts, as in one backward of the whole model.
  at::Tensor tied_head;
  if (config_.tied_embeddings && embed_.requires_grad()) tied_head = embed_.detach().requires_grad_();
  at::Tensor x = xs.back().requires_grad_();                             // no-grad results are leaves
  const at::Tensor loss =
      head_loss_sum(norm(x, norm_w_, norm_b_), ids, nullptr, {}, tied_head.defined() ? &tied_head : nullptr);
  (loss * scale).backward();
  at::Tensor grad = x.grad();
  xs.pop_back();
  for (int64_t l = L - 1; l >= 0; --l) {                                  // each layer's forward again, then its backward
    at::Tensor xi = xs.back().requires_grad_();
    block(l, xi, cos, sin, nullptr, nullptr).backward(grad);
    grad = xi.grad();
    xs.pop_back();
  }
  // Tied: the lookup's part as a sparse gradient of the looked-up rows, added into the head's dense one
  // (no second [V, d] buffer).
  const bool sparse = tied_head.defined() && tied_head.grad().defined();
  if (sparse) embed_.mutable_grad() = tied_head.grad();
  const at::Tensor x0 = embed_positions(ids, pos, 0, nullptr, sparse);
  if (x0.requires_grad()) x0.backward(grad);
  return loss.item<double>();
}

void Decoder::set_skipped_layers(std::vector<bool> skip) {
  SECATEUR_CHECK(skip.empty() || static_cast<int64_t>(skip.size()) == config_.n_layers(), "[model] {} skip flags "
                 "for {} layers", skip.size(), config_.n_layers());
  skipped_ = std::move(skip);
}

at::Tensor Decoder::embed(const at::Tensor& ids, bool sparse_grad) const {
  return parallel::vocab_parallel_embedding(embed_, ids, plan_.vocab, tp_, sparse_grad);
}

at::Tensor Decoder::logits(const at::Tensor& ids, KVCache* cache) const {
  return parallel::gather_last_dim(fast_linear(hidden_states(ids, cache), head_weight()), tp_);
}

void Decoder::observe(const at::Tensor& ids) const { tap(-1, Tap::head_in, hidden_states(ids)); }

at::Tensor Decoder::loss_sum(const at::Tensor& ids, const Distill* kd, const at::Tensor& predict) const {
  return head_loss_sum(hidden_states(ids), ids, kd, predict);
}

at::Tensor Decoder::loss_sum_from(const at::Tensor& x, int64_t from, const at::Tensor& ids) const {
  SECATEUR_CHECK(x.dim() == 3 && x.size(0) == ids.size(0) && x.size(1) == ids.size(1) && from >= 0 &&
                     from <= config_.n_layers(), "[model] the residual stream entering layer {} must be [B, T, d] "
                 "of ids [B, T]", from);
  return head_loss_sum(layers(x, from, at::arange(0, x.size(1), embed_.options().dtype(at::kLong)), nullptr, nullptr),
                       ids, nullptr, {});
}

at::Tensor Decoder::head_loss_sum(const at::Tensor& h0, const at::Tensor& ids, const Distill* kd,
                                  const at::Tensor& predict, const at::Tensor* head) const {
  const at::Tensor& head_w = head ? *head : head_weight();
  const at::Tensor h = parallel::copy_to_tp(h0, tp_);                               // [B, T, d]; the head is column-parallel
  tap(-1, Tap::head_in, h);
  const int64_t B = ids.size(0), T = ids.size(1), chunk = 256;
  SECATEUR_CHECK(!predict.defined() || predict.sizes() == ids.sizes(), "[model] the target mask has shape [{}], "
                 "the ids [{}]", fmt::join(predict.sizes(), ", "), fmt::join(ids.sizes(), ", "));
  at::Tensor teacher_h;
  if (kd) {
    SECATEUR_CHECK(kd->teacher && kd->teacher->config().vocab_size == config_.vocab_size &&
                       kd->teacher->plan_.vocab.begin == plan_.vocab.begin &&
                       kd->teacher->plan_.vocab.end == plan_.vocab.end,
                   "[model] distillation needs a teacher with the same vocabulary on the same TP ranks");
    SECATEUR_CHECK(kd->hidden_weight == 0 || kd->teacher->config().hidden == config_.hidden, "[model] hidden-state "
                   "distillation needs the teacher's hidden size ({}) to equal the student's ({})",
                   kd->teacher->config().hidden, config_.hidden);
    at::NoGradGuard no_grad;
    teacher_h = kd->teacher->hidden_states(ids);
  }
  // Logits past kLogitBytes (a large vocabulary, many tokens), and on a TP group always (its
  // vocabulary-parallel cross-entropy keeps several logit-sized tensors for the backward): never
  // held whole, their gradients taken chunk by chunk in the forward (the plain path below keeps
  // every chunk's for the backward).
  constexpr int64_t kLogitBytes = 256 << 20, kChunkBytes = 64 << 20;
  const int64_t rows = B * (T - 1), v_local = head_w.size(0);
  if (!kd && (rows * v_local * 4 > kLogitBytes || !tp_.alone())) {
    return parallel::vocab_parallel_linear_cross_entropy(
        h.narrow(1, 0, T - 1).reshape({rows, h.size(2)}), head_w, ids.narrow(1, 1, T - 1).reshape({-1}),
        predict.defined() ? predict.narrow(1, 1, T - 1).reshape({-1}) : at::Tensor(), plan_.vocab, tp_,
        std::max<int64_t>(1, kChunkBytes / 4 / v_local));
  }
  const at::ScalarType acc = at::promote_types(h.scalar_type(), at::kFloat);
  at::Tensor total = at::zeros({}, h.options().dtype(acc));
  for (int64_t t0 = 0; t0 < T - 1; t0 += chunk) {
    const int64_t n = std::min(chunk, T - 1 - t0);
    const at::Tensor lg = at::linear(h.narrow(1, t0, n), head_w).to(acc).reshape({B * n, -1});   // [B*n, V_local]
    const at::Tensor target = ids.narrow(1, t0 + 1, n).reshape({-1});                          // [B*n]
    const at::Tensor ce = parallel::vocab_parallel_cross_entropy(lg, target, plan_.vocab, tp_);   // [B*n]
    at::Tensor per_token = ce;
    if (kd) {
      // z = logits / T.
      const double temp = kd->temperature;
      const at::Tensor zt =
          at::linear(teacher_h.narrow(1, t0, n), kd->teacher->head_weight()).to(acc).reshape({B * n, -1}) / temp;
      const at::Tensor kl = parallel::vocab_parallel_kl(zt, lg / temp, tp_);                    // [B*n]
      per_token = (1.0 - kd->alpha) * ce + kd->alpha * temp * temp * kl;
      if (kd->hidden_weight != 0) {
        // On the replicated h0 (before copy_to_tp), so every TP rank adds the same gradient once.
        const at::Tensor diff = (h0.narrow(1, t0, n) - teacher_h.narrow(1, t0, n)).to(acc);
        per_token = per_token + kd->hidden_weight * diff.square().mean(-1).reshape({-1});
      }
    }
    if (predict.defined()) per_token = per_token * predict.narrow(1, t0 + 1, n).reshape({-1}).to(acc);
    total = total + per_token.sum();
  }
  return total;
}

std::pair<double, int64_t> Decoder::nll(const at::Tensor& ids) const {
  return {loss_sum(ids).item<double>(), ids.size(0) * (ids.size(1) - 1)};
}

}  // namespace secateur::model
