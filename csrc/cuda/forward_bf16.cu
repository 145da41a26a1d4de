// Forward kernels for bf16 (see gemm.cuh); one file per dtype so that ninja compiles them in parallel.
#include "gemm.cuh"

namespace convgru {

void launch_forward_bf16(Math math, Kernel kernel, const Params& p, cudaStream_t stream) {
  TORCH_CHECK(math == Math::BF16, "convgru_ext internal error: launch_forward_bf16 got math ", int(math));
  launch_forward_kernel<Math::BF16>(kernel, p, stream);
}

}  // namespace convgru
