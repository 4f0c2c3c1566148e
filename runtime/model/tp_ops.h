// runtime/model/tp_ops.h — Megatron's conjugate operators for tensor parallelism, as autograd
// functions over a parallel::Comm (the interface only: runtime/ never sees MPI or NCCL).
//   copy_to_tp    (f): identity forward, all-reduce(sum) of the gradient backward — before a
//                      column-parallel layer, whose input is replicated;
//   reduce_from_tp(g): all-reduce(sum) forward, identity backward — after a row-parallel layer.
// A null comm means TP = 1: every function returns its input.
#pragma once
#include <ATen/core/Tensor.h>

namespace secateur::parallel {
class Comm;
}

namespace secateur::model {

at::Tensor copy_to_tp(const at::Tensor& x, parallel::Comm* tp);
at::Tensor reduce_from_tp(const at::Tensor& x, parallel::Comm* tp);
at::Tensor max_over_tp(const at::Tensor& x, parallel::Comm* tp);       // no gradient
at::Tensor gather_last_dim(const at::Tensor& x, parallel::Comm* tp);   // shards in rank order; no gradient

}  // namespace secateur::model
