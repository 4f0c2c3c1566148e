#include "parallel/collectives.h"

#include <ATen/ATen.h>

namespace secateur::parallel {

namespace {

Comm& comm_for(Group g, const at::Tensor& t) { return t.is_cuda() ? *g.comm() : g.comm()->host(); }

}  // namespace

int rank_of(Group g) { return g.rank(); }
int size_of(Group g) { return g.size(); }

Range dp_share(int64_t n, Group dp) { return split_range(n, dp.rank(), dp.size()); }

void sum(Group g, at::Tensor& t) {
  if (!g.alone() && t.defined()) comm_for(g, t).all_reduce(t, ReduceOp::sum);
}

double sum(Group g, double v) { return g.alone() ? v : g.comm()->all_reduce_scalar(v, ReduceOp::sum); }
int64_t sum(Group g, int64_t v) { return g.alone() ? v : g.comm()->all_reduce_int(v, ReduceOp::sum); }
double max(Group g, double v) { return g.alone() ? v : g.comm()->all_reduce_scalar(v, ReduceOp::max); }

at::Tensor max(Group g, const at::Tensor& t) {
  at::Tensor y = t.detach().contiguous().clone();
  if (!g.alone()) comm_for(g, y).all_reduce(y, ReduceOp::max);
  return y;
}

at::Tensor gather(Group g, const at::Tensor& piece, int dim) {
  if (g.alone()) return piece;
  if (dim == 0) return comm_for(g, piece).all_gather_v(piece.detach().contiguous());
  const at::Tensor moved = piece.detach().transpose(0, dim).contiguous();
  return comm_for(g, piece).all_gather_v(moved).transpose(0, dim);
}

std::vector<double> gather_values(Group g, double v) {
  if (g.alone()) return {v};
  const at::Tensor all = g.comm()->host().all_gather(at::tensor({v}, at::kDouble));
  return {all.data_ptr<double>(), all.data_ptr<double>() + all.numel()};
}

void barrier(Group g) {
  if (g.comm()) g.comm()->barrier();
}

bool agree(Group g, uint64_t v) { return g.alone() || g.comm()->all_reduce_min(v) == g.comm()->all_reduce_max(v); }

}  // namespace secateur::parallel
