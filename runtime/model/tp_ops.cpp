#include "runtime/model/tp_ops.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "parallel/comm.h"

namespace secateur::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor all_reduced(const at::Tensor& x, parallel::Comm* tp) {
  at::Tensor y = x.contiguous().clone();
  tp->all_reduce(y, parallel::ReduceOp::sum);
  return y;
}

struct CopyToTp : torch::autograd::Function<CopyToTp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    return x.clone();   // a fresh tensor: returning a view of the input confuses autograd
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto* tp = reinterpret_cast<parallel::Comm*>(ctx->saved_data["comm"].toInt());
    return {all_reduced(grad[0], tp), at::Tensor()};
  }
};

struct ReduceFromTp : torch::autograd::Function<ReduceFromTp> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, int64_t comm) {
    return all_reduced(x, reinterpret_cast<parallel::Comm*>(comm));
  }
  static variable_list backward(AutogradContext*, variable_list grad) { return {grad[0], at::Tensor()}; }
};

int64_t handle(parallel::Comm* tp) { return reinterpret_cast<int64_t>(tp); }

}  // namespace

at::Tensor copy_to_tp(const at::Tensor& x, parallel::Comm* tp) {
  return tp && tp->size() > 1 ? CopyToTp::apply(x, handle(tp)) : x;
}

at::Tensor reduce_from_tp(const at::Tensor& x, parallel::Comm* tp) {
  return tp && tp->size() > 1 ? ReduceFromTp::apply(x, handle(tp)) : x;
}

at::Tensor max_over_tp(const at::Tensor& x, parallel::Comm* tp) {
  at::Tensor y = x.detach().contiguous().clone();
  if (tp && tp->size() > 1) tp->all_reduce(y, parallel::ReduceOp::max);
  return y;
}

at::Tensor gather_last_dim(const at::Tensor& x, parallel::Comm* tp) {
  if (!tp || tp->size() == 1) return x;
  const at::Tensor moved = x.detach().movedim(-1, 0).contiguous();   // [V_local, ...]
  return tp->all_gather_v(moved).movedim(0, -1).contiguous();          // [..., V]
}

}  // namespace secateur::model
