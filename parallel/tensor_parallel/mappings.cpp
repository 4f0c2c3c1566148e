#include "parallel/tensor_parallel/mappings.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace secateur::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor summed(const at::Tensor& x, Comm* tp) {
  at::Tensor y = x.contiguous().clone();
  tp->all_reduce(y, ReduceOp::sum);
  return y;
}

struct CopyToTp : torch::autograd::Function<CopyToTp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    return x.clone();   // a fresh tensor: returning a view of the input confuses autograd
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {summed(grad[0], reinterpret_cast<Comm*>(ctx->saved_data["comm"].toInt())), at::Tensor()};
  }
};

struct ReduceFromTp : torch::autograd::Function<ReduceFromTp> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, int64_t comm) {
    return summed(x, reinterpret_cast<Comm*>(comm));
  }
  static variable_list backward(AutogradContext*, variable_list grad) { return {grad[0], at::Tensor()}; }
};

int64_t handle(Group tp) { return reinterpret_cast<int64_t>(tp.comm()); }

}  // namespace

at::Tensor copy_to_tp(const at::Tensor& x, Group tp) { return tp.alone() ? x : CopyToTp::apply(x, handle(tp)); }

at::Tensor reduce_from_tp(const at::Tensor& x, Group tp) {
  return tp.alone() ? x : ReduceFromTp::apply(x, handle(tp));
}

at::Tensor gather_last_dim(const at::Tensor& x, Group tp) {
  if (tp.alone()) return x;
  return gather(tp, x.movedim(-1, 0)).movedim(0, -1).contiguous();   // [..., V]
}

}  // namespace secateur::parallel
