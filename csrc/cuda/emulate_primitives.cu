// Test-only entry points to the primitives' CPU implementations (declared in convgru.h).
#include "gemm.cuh"

#include <atomic>

namespace convgru {

namespace {
std::atomic<int> schedule{static_cast<int>(EmulatedSchedule::Late)};
}  // namespace

void set_emulated_schedule(EmulatedSchedule s) { schedule.store(static_cast<int>(s)); }
EmulatedSchedule emulated_schedule() { return static_cast<EmulatedSchedule>(schedule.load()); }

void emulate_ldmatrix_x4(const uint16_t* smem, const int64_t* row_offsets, bool trans, uint32_t* out) {
  const uint16_t* rows[32];
  for (int l = 0; l < 32; ++l) rows[l] = smem + row_offsets[l];
  ldmatrix_x4_host(rows, trans, reinterpret_cast<uint32_t(*)[4]>(out));
}

void emulate_mma_sync(Math math, const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  auto* A = reinterpret_cast<const uint32_t(*)[4]>(a);
  auto* B = reinterpret_cast<const uint32_t(*)[2]>(b);
  auto* Cm = reinterpret_cast<const float(*)[4]>(c);
  auto* D = reinterpret_cast<float(*)[4]>(d);
  switch (math) {
    case Math::F16: return mma_sync_host<Math::F16>(D, A, B, Cm);
    case Math::BF16: return mma_sync_host<Math::BF16>(D, A, B, Cm);
    case Math::TF32: return mma_sync_host<Math::TF32>(D, A, B, Cm);
    default: TORCH_CHECK(false, "convgru_ext: mma.sync takes math f16, bf16 or tf32; got ", int(math));
  }
}

namespace {
template <Math kMath, Kernel kKernel, bool kWide> void cta_product(const void* a, const void* b, double* out) {
  using K = Tile<kMath, kKernel, kWide>;
  using T = typename K::T;
  using Body = EmulatedWarp<kMath, kKernel, kWide>;
  std::vector<double> buffer(K::kSmemBytes / sizeof(double) + 1);
  unsigned char* smem = reinterpret_cast<unsigned char*>(buffer.data());
  T* As = K::smem_a(smem, 0);
  T* Bs = K::smem_b(smem, 0);
  for (int r = 0; r < K::BM; ++r)
    for (int k = 0; k < K::BK; ++k) As[K::a_index(r, k)] = static_cast<const T*>(a)[r * K::BK + k];
  for (int k = 0; k < K::BK; ++k)
    for (int n = 0; n < K::BNT; ++n) Bs[K::b_index(k, n)] = static_cast<const T*>(b)[k * K::BNT + n];
  std::vector<Body> warps(K::kWarps);
  for (int w = 0; w < K::kWarps; ++w) {
    Body& body = warps[w];
    body.warp = w;
    body.acc.start(w, body.x);
    body.compute(smem, 0);
    body.acc.for_each(w, body.x, [&](int, int row, int ch, const typename K::A* v) {
      for (int g = 0; g < K::NG; ++g) out[row * K::BNT + g * K::BN + ch] = v[g];
    });
  }
}

// Every warp's fragment loads of one K-step (MmaAcc::mma on stage 0) of one tile, as rows (warp, instruction, lane,
// byte offset in the shared memory, bytes).
template <Math kMath, Kernel kKernel, bool kWide> std::vector<int64_t> fragment_loads() {
  using K = Tile<kMath, kKernel, kWide>;
  using Body = EmulatedWarp<kMath, kKernel, kWide>;
  static_assert(K::kTensorCores, "fragment loads are the tensor-core kernels'");
  std::vector<double> buffer(K::kSmemBytes / sizeof(double) + 1, 0.0);
  unsigned char* smem = reinterpret_cast<unsigned char*>(buffer.data());
  std::vector<int64_t> rows;
  std::vector<Body> warps(K::kWarps);
  for (int w = 0; w < K::kWarps; ++w) {
    Body& body = warps[w];
    body.warp = w;
    body.acc.start(w, body.x);
    body.x.trace_base = smem;
    body.compute(smem, 0);
    for (int l = 0; l < 32; ++l) {
      const auto& loads = body.x.loads[l];
      TORCH_CHECK(loads.size() == body.x.loads[0].size(), "convgru_ext internal error: lanes ran different loads");
      for (size_t n = 0; n < loads.size(); ++n) {
        rows.insert(rows.end(), {w, static_cast<int64_t>(n), l, loads[n].offset, loads[n].bytes});
      }
    }
  }
  return rows;
}

template <Math kMath, bool kWide> std::vector<int64_t> fragment_loads_math(Kernel kernel) {
  switch (kernel) {
    case Kernel::FwdRZ: return fragment_loads<kMath, Kernel::FwdRZ, kWide>();
    case Kernel::FwdN: return fragment_loads<kMath, Kernel::FwdN, kWide>();
    case Kernel::FwdAfter: return fragment_loads<kMath, Kernel::FwdAfter, kWide>();
    case Kernel::BwdN: return fragment_loads<kMath, Kernel::BwdN, kWide>();
    case Kernel::BwdRZ: return fragment_loads<kMath, Kernel::BwdRZ, kWide>();
    case Kernel::BwdAfter: return fragment_loads<kMath, Kernel::BwdAfter, kWide>();
    default: TORCH_CHECK(false, "convgru_ext: fragment loads are a GEMM kernel's; got kernel ", int(kernel));
  }
  return {};
}

template <Math kMath, bool kWide> void cta_product_math(Kernel kernel, const void* a, const void* b, double* out) {
  switch (kernel) {
    case Kernel::FwdRZ: return cta_product<kMath, Kernel::FwdRZ, kWide>(a, b, out);
    case Kernel::FwdN: return cta_product<kMath, Kernel::FwdN, kWide>(a, b, out);
    case Kernel::FwdAfter: return cta_product<kMath, Kernel::FwdAfter, kWide>(a, b, out);
    default: TORCH_CHECK(false, "convgru_ext: emulate_cta_product takes a forward kernel; got ", int(kernel));
  }
}
}  // namespace

std::vector<int64_t> emulate_fragment_loads(Math math, Kernel kernel, bool wide) {
  switch (math) {
    case Math::F16:
      return wide ? fragment_loads_math<Math::F16, true>(kernel) : fragment_loads_math<Math::F16, false>(kernel);
    case Math::BF16:
      return wide ? fragment_loads_math<Math::BF16, true>(kernel) : fragment_loads_math<Math::BF16, false>(kernel);
    case Math::TF32:
      return wide ? fragment_loads_math<Math::TF32, true>(kernel) : fragment_loads_math<Math::TF32, false>(kernel);
    default: TORCH_CHECK(false, "convgru_ext: fragment loads are the tensor cores' (f16, bf16, tf32); got math ",
                         int(math));
  }
  return {};
}

void emulate_cta_product(Math math, Kernel kernel, bool wide, const void* a, const void* b, double* out) {
  TORCH_CHECK(!wide || has_wide_tile(math), "convgru_ext: only f16, bf16 and tf32 have a wide tile; got math ",
              int(math));
  switch (math) {
    case Math::F16:
      return wide ? cta_product_math<Math::F16, true>(kernel, a, b, out)
                  : cta_product_math<Math::F16, false>(kernel, a, b, out);
    case Math::BF16:
      return wide ? cta_product_math<Math::BF16, true>(kernel, a, b, out)
                  : cta_product_math<Math::BF16, false>(kernel, a, b, out);
    case Math::TF32:
      return wide ? cta_product_math<Math::TF32, true>(kernel, a, b, out)
                  : cta_product_math<Math::TF32, false>(kernel, a, b, out);
    case Math::F32: return cta_product_math<Math::F32, false>(kernel, a, b, out);
    case Math::F64: return cta_product_math<Math::F64, false>(kernel, a, b, out);
  }
}

}  // namespace convgru
