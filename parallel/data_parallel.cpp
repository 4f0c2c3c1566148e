#include "parallel/data_parallel.h"

#include <ATen/ATen.h>

#include "runtime/core/check.h"

namespace secateur::parallel {

void all_reduce_gradients(const std::vector<at::Tensor*>& params, Comm& dp, ReduceOp op, int64_t bucket_bytes) {
  SECATEUR_CHECK(op == ReduceOp::sum || op == ReduceOp::avg, "[parallel/dp] gradients are reduced by sum or avg");
  if (dp.size() == 1) return;
  std::vector<at::Tensor> grads;
  for (at::Tensor* p : params) {
    if (p->defined() && p->grad().defined()) grads.push_back(p->mutable_grad());
  }
  // Every rank must see the same list in the same order: the parameter order is the model's.
  size_t i = 0;
  while (i < grads.size()) {
    std::vector<at::Tensor> bucket = {grads[i]};
    int64_t bytes = grads[i].numel() * grads[i].element_size();
    size_t j = i + 1;
    while (j < grads.size() && grads[j].scalar_type() == grads[i].scalar_type() &&
           grads[j].device() == grads[i].device() && bytes + grads[j].numel() * grads[j].element_size() <= bucket_bytes) {
      bytes += grads[j].numel() * grads[j].element_size();
      bucket.push_back(grads[j++]);
    }
    std::vector<at::Tensor> flat_parts;
    for (const at::Tensor& g : bucket) flat_parts.push_back(g.reshape({-1}));
    at::Tensor flat = at::cat(flat_parts);                          // [sum of numel]
    dp.all_reduce(flat, op);
    int64_t offset = 0;
    for (at::Tensor& g : bucket) {
      g.copy_(flat.narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
    i = j;
  }
}

}  // namespace secateur::parallel
