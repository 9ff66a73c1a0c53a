// Exact (erf) GELU forward/backward as MindSpore AOT custom-op kernels (CPU, float32).
//
//   GeluAotFwd : inputs (x)      -> output y  = x * Phi(x)
//   GeluAotBwd : inputs (x, dy)  -> output dx = dy * (Phi(x) + x * phi(x))
//   SwapAxes12 : inputs (x [A,B,C,D]) -> output [A,C,B,D] (attention-head split/merge in training; its own
//                gradient). MindSpore 2.10's CPU graph runtime never reuses Transpose buffers; it does reuse these.
//   LayerNormAotFwd : inputs (x [..., H], gamma [H], beta [H], eps [1]) -> y = (x - mean) * rstd * gamma + beta,
//                     rstd = 1 / sqrt(var + eps), mean and (biased) var over the last axis
//   LayerNormAotBwd : inputs (x, gamma, eps, dy) -> outputs (dx, dgamma [H], dbeta [H]); mean and rstd recomputed
//                     from x (one pass over a row that is in cache), so the forward saves nothing.
//                     MindSpore 2.10's CPU LayerNormGrad took ~10 ms on [1024, 312]; see src/infra/aot.py.
//
// Phi(x) = 0.5*erfc(-x/sqrt2), phi(x) = exp(-x^2/2)/sqrt(2*pi).
//
// Approximation (coefficients fitted in float64 with a Lawson/IRLS minimax fit, see fit3.py):
//   a = |x|
//   a < 1 :  Phi(a) - 1/2 = a * S(a^2)                 (deg-5 poly, rel. err 7e-10)
//   a >= 1:  Phi(-a) = 0.5 * exp(-a^2/2) * t * Q(t),   t = 1/(1 + PA*a)  (deg-9 poly, rel. err 7e-9)
//   exp(-a^2/2) is computed with an exact split of a^2 (a = ah + al, ah has 12 significant bits), so
//   the tail Phi(-a) keeps <= 4.5e-7 (~6 ulp) relative accuracy down to float underflow (a ~ 13.2).
//   Measured: max |gelu - exact| = 2.4e-7 (half an ulp of the output) on [-20, 20]; grad 1.6e-7.
//   |x| is clamped to 14 (Phi is exactly 0/1 in float beyond); +-inf -> (+inf, -0), NaN -> NaN.
// All branch-free so GCC auto-vectorises the loops (-O3); target_clones gives AVX-512 / AVX2+FMA /
// SSE4.2 / SSE2 versions selected at load time (portable .so).  Work is split over std::threads.
//
// Build: g++ -std=c++17 -O3 -fno-trapping-math -fPIC -shared -pthread -o libgelu_aot.so gelu_aot.cc
// Without -fno-trapping-math GCC refuses to if-convert the selects below for SSE/AVX2 (only the
// AVX-512 clone, which has masked ops, would vectorise -> 10x slower on AVX2 machines).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <thread>
#include <vector>
#include <sched.h>

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GELU_NO_CLONES)
#define GELU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "arch=x86-64-v2", "default")))
#else
#define GELU_CLONES
#endif

inline float as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// exp(a + b) for a in [-98, 0] (a exact), |b| small; returns 0 when a + b < -87 (no denormals).
inline float exp_split(float a, float b) {
  const float kMagic = 12582912.0f;  // 1.5 * 2^23: float add rounds to nearest integer
  float s = a + b;
  s = s < -87.0f ? -87.0f : s;
  float k = s * 1.44269504088896341f + kMagic;
  int32_t n = (int32_t)as_uint(k) - (int32_t)as_uint(kMagic);
  float fn = k - kMagic;
  float r = (a - fn * 0.693359375f) - fn * -2.12194440e-4f + b;  // Cody-Waite, then add b
  // cephes expf polynomial, |r| <= ~0.35
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * (r * r) + r + 1.0f;
  y *= as_float((uint32_t)(n + 127) << 23);
  return (a + b) < -87.0f ? 0.0f : y;
}

struct PhiE {
  float xc;    // x clamped to [-14, 14] (NaN preserved)
  float Phi;   // Phi(xc)
  float E;     // exp(-xc^2/2)
  float gelu;  // xc * Phi(xc), evaluated as xc - xc*Phi(-xc) for xc >= 1 (one rounding less)
};

inline PhiE phi_core(float x) {
  // NaN-preserving clamp (comparisons with NaN are false)
  float xc = x < -14.0f ? -14.0f : x;
  xc = xc > 14.0f ? 14.0f : xc;
  float a = xc < 0.0f ? -xc : xc;
  // exact a^2 = hi + lo (lo rounded, tiny): ah keeps 12 significant bits so ah*ah is exact
  float ah = as_float(as_uint(a) & 0xFFFFF000u);
  float al = a - ah;
  float hi = ah * ah;
  float lo = al * (a + ah);
  float E = exp_split(-0.5f * hi, -0.5f * lo);
  // tail: Phi(-a) = 0.5 * E * t * Q(t)
  float t = 1.0f / (1.0f + 0.2474873661994934f * a);
  float q = 3.825188801e-02f;
  q = q * t + -1.580920070e-01f;
  q = q * t + 1.794245541e-01f;
  q = q * t + -2.488246001e-02f;
  q = q * t + 8.456835896e-02f;
  q = q * t + 1.474208236e-01f;
  q = q * t + 1.506842673e-01f;
  q = q * t + 1.880162358e-01f;
  q = q * t + 1.971237659e-01f;
  q = q * t + 1.974845678e-01f;
  float tail = 0.5f * E * (t * q);  // Phi(-a)
  // small: Phi(a) - 0.5 = a * S(a^2)
  float s2 = hi + lo;
  float sp = -7.654206456e-06f;
  sp = sp * s2 + 1.134863633e-04f;
  sp = sp * s2 + -1.186329988e-03f;
  sp = sp * s2 + 9.973322973e-03f;
  sp = sp * s2 + -6.649035960e-02f;
  sp = sp * s2 + 3.989422917e-01f;
  float half_erf = a * sp;
  // Phi(x) for the sign of x
  float phi_small = xc < 0.0f ? 0.5f - half_erf : 0.5f + half_erf;
  float phi_tail = xc < 0.0f ? tail : 1.0f - tail;
  PhiE r;
  r.xc = xc;
  r.Phi = a < 1.0f ? phi_small : phi_tail;
  r.E = E;
  float xt = xc * tail;
  float gelu_tail = xc < 0.0f ? xt : xc - xt;
  r.gelu = a < 1.0f ? xc * phi_small : gelu_tail;
  return r;
}

GELU_CLONES
void gelu_fwd_range(const float *__restrict x, float *__restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float xi = x[i];
    PhiE p = phi_core(xi);
    y[i] = xi > 14.0f ? xi : p.gelu;  // +inf -> +inf; -inf -> -14*0 = -0; NaN -> NaN
  }
}

GELU_CLONES
void gelu_bwd_range(const float *__restrict x, const float *__restrict dy, float *__restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    PhiE p = phi_core(x[i]);
    float g = p.Phi + p.xc * (0.398942280401432678f * p.E);
    dx[i] = dy[i] * g;
  }
}

int cpu_count() {
  static const int nc = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      int c = CPU_COUNT(&set);
      if (c > 0) return c;
    }
    unsigned h = std::thread::hardware_concurrency();
    return h > 0 ? (int)h : 1;
  }();
  return nc;
}

// $GELU_AOT_NUM_THREADS (read per call, so it can be changed at run time), else the affinity CPU count.
int num_threads() {
  const char *env = std::getenv("GELU_AOT_NUM_THREADS");
  int n = env != nullptr ? std::atoi(env) : 0;
  return n > 0 ? n : cpu_count();
}

// Run f(k, begin, end) over [0, n) split into at most max_threads contiguous chunks (chunk k on thread k, chunk 0
// on the caller) of at least `grain` units, chunk sizes rounded up to a multiple of `align`.
template <typename F>
void parallel_chunks(int64_t n, int64_t grain, int64_t align, int64_t max_threads, F f) {
  int64_t nt = max_threads;
  if (nt > (n + grain - 1) / grain) nt = (n + grain - 1) / grain;
  if (nt <= 1) {
    f(0, 0, n);
    return;
  }
  const int64_t chunk = ((n + nt - 1) / nt + align - 1) / align * align;
  std::vector<std::thread> workers;
  workers.reserve(nt - 1);
  for (int64_t k = 1; k < nt; ++k) {
    int64_t b = k * chunk, e = b + chunk < n ? b + chunk : n;
    if (b >= e) break;
    workers.emplace_back([=] { f(k, b, e); });
  }
  f(0, 0, chunk < n ? chunk : n);
  for (auto &w : workers) w.join();
}

// f(begin, end) over [0, n) elements: chunks of >= 64K elements (below that threading is not worth it), multiples
// of 64, on num_threads() threads.
template <typename F>
void parallel_for(int64_t n, F f) {
  parallel_chunks(n, int64_t(1) << 16, 64, num_threads(), [&f](int64_t, int64_t b, int64_t e) { f(b, e); });
}

int64_t numel(int nd, const int64_t *shape) {
  int64_t s = 1;
  for (int i = 0; i < nd; ++i) s *= shape[i];
  return s;
}

bool is_f32(const char *d) {
  return d != nullptr && (std::strcmp(d, "float32") == 0 || std::strcmp(d, "Float32") == 0);
}


// ---- LayerNorm over the last axis (rows of H floats) ----
// Row sums with 16 independent accumulators: without -ffast-math GCC keeps one float chain in order (no
// vectorisation); 16 lanes give it a vector of partial sums, summed at the end in a fixed order.
GELU_CLONES
void row_mean_rstd(const float *x, int64_t H, float eps, float *mean_out, float *rstd_out) {
  float acc[16] = {0.0f};
  int64_t i = 0;
  for (; i + 16 <= H; i += 16)
    for (int l = 0; l < 16; ++l) acc[l] += x[i + l];
  float sum = 0.0f;
  for (int l = 0; l < 16; ++l) sum += acc[l];
  for (; i < H; ++i) sum += x[i];
  const float mean = sum / (float)H;
  float acc2[16] = {0.0f};
  i = 0;
  for (; i + 16 <= H; i += 16)
    for (int l = 0; l < 16; ++l) {
      float d = x[i + l] - mean;
      acc2[l] += d * d;
    }
  float var = 0.0f;
  for (int l = 0; l < 16; ++l) var += acc2[l];
  for (; i < H; ++i) {
    float d = x[i] - mean;
    var += d * d;
  }
  var /= (float)H;
  *mean_out = mean;
  *rstd_out = 1.0f / std::sqrt(var + eps);
}

GELU_CLONES
void layer_norm_fwd_rows(const float *x, const float *gamma, const float *beta, float eps, float *y, int64_t r0,
                         int64_t r1, int64_t H) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *xr = x + r * H;
    float *yr = y + r * H;
    float mean, rstd;
    row_mean_rstd(xr, H, eps, &mean, &rstd);
    for (int64_t i = 0; i < H; ++i) yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, xhat = (x - mean) * rstd;
// dgamma += dy * xhat and dbeta += dy over the rows [r0, r1) into this chunk's own partial sums.
GELU_CLONES
void layer_norm_bwd_rows(const float *x, const float *gamma, float eps, const float *dy, float *dx, float *dgamma,
                         float *dbeta, int64_t r0, int64_t r1, int64_t H) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *xr = x + r * H, *dyr = dy + r * H;
    float *dxr = dx + r * H;
    float mean, rstd;
    row_mean_rstd(xr, H, eps, &mean, &rstd);
    float a1[16] = {0.0f}, a2[16] = {0.0f};
    int64_t i = 0;
    for (; i + 16 <= H; i += 16)
      for (int l = 0; l < 16; ++l) {
        float xh = (xr[i + l] - mean) * rstd;
        float g = dyr[i + l] * gamma[i + l];
        a1[l] += g;
        a2[l] += g * xh;
      }
    float sg = 0.0f, sgx = 0.0f;
    for (int l = 0; l < 16; ++l) {
      sg += a1[l];
      sgx += a2[l];
    }
    for (; i < H; ++i) {
      float xh = (xr[i] - mean) * rstd;
      float g = dyr[i] * gamma[i];
      sg += g;
      sgx += g * xh;
    }
    const float mg = sg / (float)H, mgx = sgx / (float)H;
    for (int64_t j = 0; j < H; ++j) {
      float xh = (xr[j] - mean) * rstd;
      dxr[j] = rstd * (dyr[j] * gamma[j] - mg - xh * mgx);
      dgamma[j] += dyr[j] * xh;
      dbeta[j] += dyr[j];
    }
  }
}

// f(k, first row, end row) over rows of H floats: chunks of >= 64K elements, as parallel_for.
template <typename F>
void parallel_rows(int64_t rows, int64_t H, int64_t max_threads, F f) {
  parallel_chunks(rows, ((int64_t(1) << 16) + H - 1) / H, 1, max_threads, f);
}

// The checks every entry point starts with: 0 ok, 1 bad nparam/pointers, 2 a parameter not float32.
int check_f32_params(int nparam, int expected, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != expected || params == nullptr || ndims == nullptr || shapes == nullptr || dtypes == nullptr) return 1;
  for (int k = 0; k < nparam; ++k)
    if (!is_f32(dtypes[k])) return 2;
  return 0;
}
}  // namespace

extern "C" {

// Return codes: 0 ok, 1 bad nparam/pointers, 2 unsupported dtype (float32 only), 3 shape mismatch.
int GeluAotFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
               void *extra) {
  (void)stream;
  (void)extra;
  if (int bad = check_f32_params(nparam, 2, params, ndims, shapes, dtypes)) return bad;
  const int64_t n = numel(ndims[0], shapes[0]);
  if (n != numel(ndims[1], shapes[1])) return 3;
  if (n == 0) return 0;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  if (x == nullptr || y == nullptr) return 1;
  parallel_for(n, [=](int64_t b, int64_t e) { gelu_fwd_range(x + b, y + b, e - b); });
  return 0;
}

int GeluAotBwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
               void *extra) {
  (void)stream;
  (void)extra;
  if (int bad = check_f32_params(nparam, 3, params, ndims, shapes, dtypes)) return bad;
  const int64_t n = numel(ndims[0], shapes[0]);
  if (n != numel(ndims[1], shapes[1]) || n != numel(ndims[2], shapes[2])) return 3;
  if (n == 0) return 0;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  if (x == nullptr || dy == nullptr || dx == nullptr) return 1;
  parallel_for(n, [=](int64_t b, int64_t e) { gelu_bwd_range(x + b, dy + b, dx + b, e - b); });
  return 0;
}

// out[a, c, b, :] = in[a, b, c, :] for float32 in [A, B, C, D] and out [A, C, B, D]: the attention-head split
// ([B, S, N, d] -> [B, N, S, d]) and merge. Its own inverse, so the gradient is the same call on dout.
int SwapAxes12(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
               void *extra) {
  (void)stream;
  (void)extra;
  if (int bad = check_f32_params(nparam, 2, params, ndims, shapes, dtypes)) return bad;
  if (ndims[0] != 4 || ndims[1] != 4) return 3;
  const int64_t A = shapes[0][0], B = shapes[0][1], C = shapes[0][2], D = shapes[0][3];
  if (shapes[1][0] != A || shapes[1][1] != C || shapes[1][2] != B || shapes[1][3] != D) return 3;
  const int64_t rows = A * B * C;
  if (rows == 0 || D == 0) return 0;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  if (x == nullptr || y == nullptr) return 1;
  // rows of the output in order; parallel_for's grain is in elements, so scale rows by D
  parallel_for(rows * D, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin / D; r < (end + D - 1) / D && r < rows; ++r) {
      if (r * D < begin) continue;  // a row belongs to the chunk holding its first element
      const int64_t a = r / (C * B), rem = r % (C * B), c = rem / B, b = rem % B;
      std::memcpy(y + r * D, x + ((a * B + b) * C + c) * D, sizeof(float) * D);
    }
  });
  return 0;
}

// LayerNormAotFwd: params (x, gamma, beta, eps, y). Return codes as above.
int LayerNormAotFwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  (void)stream;
  (void)extra;
  if (int bad = check_f32_params(nparam, 5, params, ndims, shapes, dtypes)) return bad;
  if (ndims[0] < 1) return 3;
  const int64_t H = shapes[0][ndims[0] - 1];
  const int64_t n = numel(ndims[0], shapes[0]);
  if (numel(ndims[1], shapes[1]) != H || numel(ndims[2], shapes[2]) != H || numel(ndims[3], shapes[3]) != 1 ||
      numel(ndims[4], shapes[4]) != n)
    return 3;
  if (n == 0 || H == 0) return 0;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  if (x == nullptr || gamma == nullptr || beta == nullptr || y == nullptr) return 1;
  parallel_rows(n / H, H, num_threads(),
                [=](int64_t, int64_t b, int64_t e) { layer_norm_fwd_rows(x, gamma, beta, eps, y, b, e, H); });
  return 0;
}

// LayerNormAotBwd: params (x, gamma, eps, dy, dx, dgamma, dbeta). dgamma/dbeta: per-chunk partial sums added in
// chunk order (deterministic for a given thread count).
int LayerNormAotBwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  (void)stream;
  (void)extra;
  if (int bad = check_f32_params(nparam, 7, params, ndims, shapes, dtypes)) return bad;
  if (ndims[0] < 1) return 3;
  const int64_t H = shapes[0][ndims[0] - 1];
  const int64_t n = numel(ndims[0], shapes[0]);
  if (numel(ndims[1], shapes[1]) != H || numel(ndims[2], shapes[2]) != 1 || numel(ndims[3], shapes[3]) != n ||
      numel(ndims[4], shapes[4]) != n || numel(ndims[5], shapes[5]) != H || numel(ndims[6], shapes[6]) != H)
    return 3;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  const float *dy = static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dgamma = static_cast<float *>(params[5]);
  float *dbeta = static_cast<float *>(params[6]);
  if (x == nullptr || gamma == nullptr || dy == nullptr || dx == nullptr || dgamma == nullptr || dbeta == nullptr)
    return 1;
  std::memset(dgamma, 0, sizeof(float) * H);
  std::memset(dbeta, 0, sizeof(float) * H);
  if (n == 0 || H == 0) return 0;
  const int64_t rows = n / H;
  const int64_t nt = num_threads();
  std::vector<float> partial((size_t)(nt * 2 * H), 0.0f);
  float *base = partial.data();
  parallel_rows(rows, H, nt, [=](int64_t k, int64_t b, int64_t e) {
    layer_norm_bwd_rows(x, gamma, eps, dy, dx, base + k * 2 * H, base + k * 2 * H + H, b, e, H);
  });
  for (int64_t k = 0; k < nt; ++k)
    for (int64_t j = 0; j < H; ++j) {
      dgamma[j] += base[k * 2 * H + j];
      dbeta[j] += base[k * 2 * H + H + j];
    }
  return 0;
}

}  // extern "C"
