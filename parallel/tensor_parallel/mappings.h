// parallel/tensor_parallel/mappings.h — Megatron's conjugate operators for tensor parallelism, as
// autograd functions over a TP group:
//   copy_to_tp    (f): identity forward, sum of the gradient over TP backward — before a
//                      column-parallel layer, whose input is replicated;
//   reduce_from_tp(g): sum over TP forward, identity backward — after a row-parallel layer.
// On a group of one every function returns its input.
#pragma once
#include <ATen/core/Tensor.h>

#include "parallel/collectives.h"

namespace secateur::parallel {

at::Tensor copy_to_tp(const at::Tensor& x, Group tp);
at::Tensor reduce_from_tp(const at::Tensor& x, Group tp);
at::Tensor gather_last_dim(const at::Tensor& x, Group tp);   // shards in rank order; no gradient

}  // namespace secateur::parallel
