// Whether float32 convolutions may use TF32 tensor cores: the convolution operator's own flag.
//
// PyTorch has had three C++ forms of this switch, and the extension is built against whichever
// torch the machine has (CI: 2.14; the lent GPU: 2.11):
//   * `allowTF32CuDNN()`                           (before the fp32_precision API),
//   * `allowTF32CuDNN(const std::string& op = "")`  (fp32_precision API, ops named by strings),
//   * `allowTF32CuDNN(std::optional<Float32Op> op)` (the same API, ops named by an enum).
// In both newer forms, the call *without* an operator raises once a user has set the convolution's
// and the RNN's flags apart through `torch.backends.cudnn.conv.fp32_precision`, so the
// convolution's operator is always named.  `conv_allows_tf32(ctx)` picks the form at compile time;
// the Python twin is `convgru_ext._tf32.conv_allows_tf32`, and tests/test_tf32.py holds the two to
// the same answer.  The header needs no torch headers: tests compile it against mock contexts of
// each form.
#pragma once

#include <optional>
#include <string>
#include <type_traits>

namespace convgru {
namespace tf32_detail {

template <typename Fn>
struct first_arg { using type = void; };  // allowTF32CuDNN() takes no argument
template <typename R, typename C, typename A>
struct first_arg<R (C::*)(A) const> { using type = std::decay_t<A>; };

template <typename T>
struct optional_value { using type = void; };
template <typename T>
struct optional_value<std::optional<T>> { using type = T; };

}  // namespace tf32_detail

template <typename Context>
bool conv_allows_tf32(const Context& ctx) {
  using Arg = typename tf32_detail::first_arg<decltype(&Context::allowTF32CuDNN)>::type;
  if constexpr (std::is_void_v<Arg>) {
    return ctx.allowTF32CuDNN();
  } else if constexpr (std::is_same_v<Arg, std::string>) {
    return ctx.allowTF32CuDNN(std::string("conv"));
  } else {
    using Op = typename tf32_detail::optional_value<Arg>::type;  // the Float32Op enum
    return ctx.allowTF32CuDNN(Op::CONV);
  }
}

}  // namespace convgru
