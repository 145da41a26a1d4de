// Forward kernels for f16 (see gemm.cuh); one file per dtype so that ninja compiles them in parallel.
#include "gemm.cuh"

namespace convgru {

void launch_forward_f16(Math math, Kernel kernel, const Params& p, cudaStream_t stream) {
  TORCH_CHECK(math == Math::F16, "convgru_ext internal error: launch_forward_f16 got math ", int(math));
  launch_forward_kernel<Math::F16>(kernel, p, stream);
}

}  // namespace convgru
