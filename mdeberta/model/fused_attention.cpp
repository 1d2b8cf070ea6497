// CPU kernel of the ``fused`` attention backend (mdeberta/model/attention/fused.py).
//
// The [N, L, K] score matrices of disentangled attention (N = batch x heads) are read and
// written once per direction instead of once per operation. Forward, per score row: Q.K^T
// (from a GEMM) scaled, plus the c2p and p2c position terms gathered from their tables, the
// padding mask, softmax and dropout. Backward, per score row: the softmax gradient with the
// dropout folded in, and its scatter-add into both position tables. The GEMMs stay in PyTorch.
//
// Dropout masks are drawn here, from a seed: an element is dropped where its random 16-bit lane
// is below a threshold. The lanes are a hash of (seed, position), so no mask is stored: the
// attention probabilities carry it in their sign bits, and ``dropout`` (hidden states) redraws
// it in backward.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

// body(begin, end) over [0, count), split across torch's intra-op thread count. Plain threads:
// ATen's OpenMP-based parallel_for would need this file linked against torch's own OpenMP.
template <typename Body>
void parallel_chunks(int64_t count, const Body& body) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), count));
  const int64_t chunk = (count + workers - 1) / workers;
  std::vector<std::thread> threads;
  for (int64_t begin = chunk; begin < count; begin += chunk) {
    threads.emplace_back([&body, begin, end = std::min(count, begin + chunk)] { body(begin, end); });
  }
  body(0, std::min(count, chunk));
  for (auto& thread : threads) thread.join();
}

// 16 floats as one value: GCC/Clang vector extensions, lowered to the machine's SIMD registers.
using floats = float __attribute__((vector_size(64)));
using ints = int32_t __attribute__((vector_size(64)));
constexpr int64_t kLanes = sizeof(floats) / sizeof(float);

// exp(x) for x <= 0 (softmax after subtracting the row maximum): Cephes' polynomial on
// [-ln2/2, ln2/2] times 2^n, within 2 ulp. Adding 1.5 * 2^23 rounds x / ln2 to the integer n
// and leaves n in the low mantissa bits. Below -87 the result would leave the normal range;
// it is 0 there (the exact value is below 1.7e-38).
inline floats exp_nonpositive(floats x) {
  const floats clamped = x < -87.0f ? floats{} - 87.0f : x;
  const floats magic = floats{} + 12582912.0f;
  const floats shifted = clamped * 1.44269504088896341f + magic;
  const floats n = shifted - magic;
  const floats r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  floats p = floats{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const ints power = ((reinterpret_cast<const ints&>(shifted) - reinterpret_cast<const ints&>(magic)) + 127) << 23;
  return x < -87.0f ? floats{} : p * reinterpret_cast<const floats&>(power);
}

inline floats load(const float* source) {
  floats values;
  std::memcpy(&values, source, sizeof values);
  return values;
}

inline void store(float* target, floats values) { std::memcpy(target, &values, sizeof values); }

// The last ``count`` (< kLanes) values of a row, the rest of the vector set to ``fill``.
inline floats load_tail(const float* source, int64_t count, float fill) {
  floats values = floats{} + fill;
  std::memcpy(&values, source, count * sizeof(float));
  return values;
}

constexpr float kLowest = std::numeric_limits<float>::lowest();

float row_max(const float* s, int64_t width) {
  floats top = floats{} + kLowest;
  int64_t j = 0;
  for (; j + kLanes <= width; j += kLanes) top = load(s + j) > top ? load(s + j) : top;
  if (j < width) {
    const floats tail = load_tail(s + j, width - j, kLowest);
    top = tail > top ? tail : top;
  }
  return *std::max_element(&top[0], &top[0] + kLanes);
}

// s[j] = exp(s[j] - top) over one row; returns the row's sum.
float exp_row(float* s, int64_t width, float top) {
  floats sum{};
  int64_t j = 0;
  for (; j + kLanes <= width; j += kLanes) {
    const floats values = exp_nonpositive(load(s + j) - top);
    store(s + j, values);
    sum += values;
  }
  if (j < width) {  // padded with -inf, whose exp is 0 even where top is the lowest float (a masked row)
    const floats values = exp_nonpositive(load_tail(s + j, width - j, -INFINITY) - top);
    std::memcpy(s + j, &values, (width - j) * sizeof(float));
    sum += values;
  }
  float total = 0.0f;
  for (int64_t lane = 0; lane < kLanes; ++lane) total += sum[lane];
  return total;
}

// Random 16-bit lanes, counter-based: splitmix64 of (seed, group), four lanes per 64-bit word,
// 16 lanes per group of 16 elements. The same seed and group always give the same lanes.
using words = uint64_t __attribute__((vector_size(sizeof(floats) / 2)));
using halves = uint16_t __attribute__((vector_size(sizeof(floats) / 2)));

inline words splitmix64(words z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Whether each of the 16 elements of a group is dropped (-1) or kept (0).
inline ints dropped(uint64_t seed, uint64_t group, int32_t threshold) {
  words counter;
  for (int64_t word = 0; word < kLanes / 4; ++word) counter[word] = group * (kLanes / 4) + word;
  const words bits = splitmix64(counter * 0x9e3779b97f4a7c15ULL + seed);
  halves lanes;
  std::memcpy(&lanes, &bits, sizeof lanes);
  return __builtin_convertvector(lanes, ints) < threshold;
}

// One score row, forward: s = s * scale + c2p[idx] + p2c[idx, j] (either table may be null),
// then the padding mask. Separate functions with restrict pointers so that the gathers vectorise.
void add_positions(float* __restrict s, const int32_t* __restrict idx, const float* __restrict c,
                   const float* __restrict p, int64_t width, float scale) {
  if (c && p) {
    for (int64_t j = 0; j < width; ++j) s[j] = s[j] * scale + c[idx[j]] + p[idx[j] * width + j];
  } else if (c) {
    for (int64_t j = 0; j < width; ++j) s[j] = s[j] * scale + c[idx[j]];
  } else if (p) {
    for (int64_t j = 0; j < width; ++j) s[j] = s[j] * scale + p[idx[j] * width + j];
  } else {
    for (int64_t j = 0; j < width; ++j) s[j] *= scale;
  }
}

// s[j] = fill where m[j] is false.
void apply_mask(float* s, const bool* m, int64_t width, float fill) {
  using flags = uint8_t __attribute__((vector_size(kLanes)));
  int64_t j = 0;
  for (; j + kLanes <= width; j += kLanes) {
    flags allowed;
    std::memcpy(&allowed, m + j, sizeof allowed);
    store(s + j, __builtin_convertvector(allowed, ints) != 0 ? load(s + j) : floats{} + fill);
  }
  for (; j < width; ++j) s[j] = m[j] ? s[j] : fill;
}

// Softmax of one row in place; with a threshold, also dropout (groups from ``first_group`` on):
// kept gets the probability or 0, and the probability is negated in s where it was dropped.
void softmax_dropout(float* s, float* kept, uint64_t seed, uint64_t first_group, int32_t threshold, int64_t width) {
  const float inverse = 1.0f / exp_row(s, width, row_max(s, width));
  if (threshold == 0) {
    for (int64_t j = 0; j < width; ++j) s[j] *= inverse;
    return;
  }
  for (int64_t j = 0; j < width; j += kLanes) {
    const ints drop = dropped(seed, first_group + j / kLanes, threshold);
    if (j + kLanes <= width) {
      const floats probability = load(s + j) * inverse;
      store(kept + j, drop ? floats{} : probability);
      store(s + j, drop ? -probability : probability);
    } else {
      for (int64_t lane = 0; j + lane < width; ++lane) {
        const float probability = s[j + lane] * inverse;
        kept[j + lane] = drop[lane] ? 0.0f : probability;
        s[j + lane] = drop[lane] ? -probability : probability;
      }
    }
  }
}

// One row, backward: g (gradient of the kept probabilities) becomes the gradient of the
// scores, kept * g - |P| * sum(kept * g), the softmax gradient with dropout folded in.
void softmax_backward(float* g, const float* probability, int64_t width) {
  floats sum{};
  int64_t j = 0;
  for (; j + kLanes <= width; j += kLanes) {
    const floats p = load(probability + j);
    sum += (p > 0.0f ? p : floats{}) * load(g + j);
  }
  float total = 0.0f;
  for (int64_t lane = 0; lane < kLanes; ++lane) total += sum[lane];
  for (; j < width; ++j) total += std::max(probability[j], 0.0f) * g[j];
  for (j = 0; j + kLanes <= width; j += kLanes) {
    const floats p = load(probability + j);
    store(g + j, (p > 0.0f ? p : floats{}) * load(g + j) - (p < 0.0f ? -p : p) * total);
  }
  for (; j < width; ++j) g[j] = std::max(probability[j], 0.0f) * g[j] - std::fabs(probability[j]) * total;
}

// c2p's row: distances repeat along the row (log buckets), so lanes may collide: scalar.
void scatter_c2p(float* __restrict table_row, const int32_t* __restrict idx, const float* __restrict g,
                 int64_t width, int64_t span) {
  std::fill(table_row, table_row + span, 0.0f);
  for (int64_t j = 0; j < width; ++j) table_row[idx[j]] += g[j];
}

// p2c's table: distinct j land in distinct columns, so no two lanes of a vector add to one element.
void scatter_p2c(float* __restrict table, const int32_t* __restrict idx, const float* __restrict g, int64_t width) {
#pragma omp simd
  for (int64_t j = 0; j < width; ++j) table[idx[j] * width + j] += g[j];
}

const float* optional_data(const c10::optional<torch::Tensor>& tensor) {
  return tensor.has_value() ? tensor->data_ptr<float>() : nullptr;
}

void check(const torch::Tensor& tensor, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == dtype && tensor.is_contiguous(),
              "fused attention: ", name, " must be a contiguous CPU tensor of ", c10::toString(dtype));
}

}  // namespace

// scores [N, L, K]: Q.K^T on entry; softmax probabilities on return, negated where dropped.
// c2p [N, L, T], p2c [N, T, K]: position tables (either may be absent); index [NI, L, K]
// int32 into them, NI = 1 or the batch size; mask [B, L, K] bool (true = may attend);
// Dropout where a lane drawn from ``seed`` is below ``threshold`` (of 65536; 0: no dropout).
// Returns the kept probabilities (0 where dropped, not rescaled), or ``scores`` itself
// without dropout.
torch::Tensor probabilities(torch::Tensor scores, double alpha, const c10::optional<torch::Tensor>& c2p,
                            const c10::optional<torch::Tensor>& p2c, const torch::Tensor& index, int64_t heads,
                            const c10::optional<torch::Tensor>& mask, int64_t seed, int64_t threshold) {
  check(scores, torch::kFloat, "scores");
  check(index, torch::kInt, "index");
  if (c2p) check(*c2p, torch::kFloat, "c2p");
  if (p2c) check(*p2c, torch::kFloat, "p2c");
  if (mask) check(*mask, torch::kBool, "mask");
  TORCH_CHECK(threshold >= 0 && threshold < 65536, "fused attention: dropout threshold must be in [0, 65536)");
  const int64_t length = scores.size(1), width = scores.size(2);
  const int64_t span = c2p ? c2p->size(2) : (p2c ? p2c->size(1) : 0);
  const bool index_per_batch = index.size(0) > 1;
  torch::Tensor kept = threshold > 0 ? torch::empty_like(scores) : scores;
  float* all_scores = scores.data_ptr<float>();
  float* all_kept = kept.data_ptr<float>();
  const float* c2p_data = optional_data(c2p);
  const float* p2c_data = optional_data(p2c);
  const int32_t* index_data = index.data_ptr<int32_t>();
  const bool* mask_data = mask ? mask->data_ptr<bool>() : nullptr;
  const int64_t groups_per_row = (width + kLanes - 1) / kLanes;
  const float scale = static_cast<float>(alpha);

  parallel_chunks(scores.size(0) * length, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / length, i = row % length, batch = n / heads;
      float* s = all_scores + row * width;
      const int32_t* idx = index_data + ((index_per_batch ? batch * length : 0) + i) * width;
      add_positions(s, idx, c2p_data ? c2p_data + row * span : nullptr,
                    p2c_data ? p2c_data + n * span * width : nullptr, width, scale);
      if (mask_data) apply_mask(s, mask_data + (batch * length + i) * width, width, kLowest);
      softmax_dropout(s, all_kept + row * width, static_cast<uint64_t>(seed), row * groups_per_row,
                      static_cast<int32_t>(threshold), width);
    }
  });
  return kept;
}

// grad [N, L, K]: gradient of the kept probabilities on entry, of the scores on return
// (0 at masked scores). probs: as ``probabilities`` left them. Returns the gradients of the
// c2p [N, L, span] and p2c [N, span, K] tables (empty tensors for those not asked for).
std::vector<torch::Tensor> score_gradients(torch::Tensor grad, const torch::Tensor& probs, const torch::Tensor& index,
                                           int64_t heads, const c10::optional<torch::Tensor>& mask, int64_t span,
                                           bool want_c2p, bool want_p2c) {
  check(grad, torch::kFloat, "grad");
  check(probs, torch::kFloat, "probs");
  check(index, torch::kInt, "index");
  if (mask) check(*mask, torch::kBool, "mask");
  const int64_t count = grad.size(0), length = grad.size(1), width = grad.size(2);
  const bool index_per_batch = index.size(0) > 1;
  torch::Tensor grad_c2p = want_c2p ? torch::empty({count, length, span}, grad.options()) : torch::Tensor();
  torch::Tensor grad_p2c = want_p2c ? torch::empty({count, span, width}, grad.options()) : torch::Tensor();
  float* all_grad = grad.data_ptr<float>();
  const float* all_probs = probs.data_ptr<float>();
  float* c2p_data = want_c2p ? grad_c2p.data_ptr<float>() : nullptr;
  float* p2c_data = want_p2c ? grad_p2c.data_ptr<float>() : nullptr;
  const int32_t* index_data = index.data_ptr<int32_t>();
  const bool* mask_data = mask ? mask->data_ptr<bool>() : nullptr;

  // One head's matrix per task: its rows all add into the same p2c table.
  parallel_chunks(count, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t batch = n / heads;
      float* p2c = p2c_data ? p2c_data + n * span * width : nullptr;
      if (p2c) std::fill(p2c, p2c + span * width, 0.0f);
      for (int64_t i = 0; i < length; ++i) {
        const int64_t row = n * length + i;
        float* g = all_grad + row * width;
        const int32_t* idx = index_data + ((index_per_batch ? batch * length : 0) + i) * width;
        softmax_backward(g, all_probs + row * width, width);
        if (mask_data) apply_mask(g, mask_data + (batch * length + i) * width, width, 0.0f);
        if (c2p_data) scatter_c2p(c2p_data + row * span, idx, g, width, span);
        if (p2c) scatter_p2c(p2c, idx, g, width);
      }
    }
  });
  return {grad_c2p, grad_p2c};
}

// Hidden-state dropout, both directions: ``input`` * scale where kept, 0 where dropped, the
// mask drawn from ``seed`` per group of 16 elements. Backward calls it on the gradient with the
// same seed, which redraws the same mask.
torch::Tensor dropout(const torch::Tensor& input, int64_t seed, int64_t threshold, double scale) {
  check(input, torch::kFloat, "input");
  TORCH_CHECK(threshold >= 0 && threshold < 65536, "fused dropout: threshold must be in [0, 65536)");
  torch::Tensor output = torch::empty_like(input);
  const float* in = input.data_ptr<float>();
  float* out = output.data_ptr<float>();
  const int64_t count = input.numel(), groups = (count + kLanes - 1) / kLanes;
  const floats factor = floats{} + static_cast<float>(scale);
  parallel_chunks((groups + 255) / 256, [&](int64_t begin, int64_t end) {
    for (int64_t group = begin * 256; group < std::min(groups, end * 256); ++group) {
      const ints drop = dropped(static_cast<uint64_t>(seed), group, static_cast<int32_t>(threshold));
      const int64_t j = group * kLanes;
      if (j + kLanes <= count) {
        store(out + j, drop ? floats{} : load(in + j) * factor);
      } else {
        for (int64_t lane = 0; j + lane < count; ++lane) out[j + lane] = drop[lane] ? 0.0f : in[j + lane] * factor[0];
      }
    }
  });
  return output;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("probabilities", &probabilities, py::call_guard<py::gil_scoped_release>());
  module.def("score_gradients", &score_gradients, py::call_guard<py::gil_scoped_release>());
  module.def("dropout", &dropout, py::call_guard<py::gil_scoped_release>());
}
