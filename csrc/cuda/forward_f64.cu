// Forward kernels for f64 (see gemm.cuh); one file per dtype so that ninja compiles them in parallel.
#include "gemm.cuh"

namespace convgru {

void launch_forward_f64(Math math, Kernel kernel, const Params& p, cudaStream_t stream) {
  TORCH_CHECK(math == Math::F64, "convgru_ext internal error: launch_forward_f64 got math ", int(math));
  launch_forward_kernel<Math::F64>(kernel, p, stream);
}

}  // namespace convgru
