// ---- Tessera tile header -------------------------------------------------------------
// Self-contained (no CUDA headers needed): 16-bit float types, conversions, vector
// memory access, the per-thread slot layout of tiles, mma.sync dot products and warp
// reductions. The kernel below it defines TSR_THREADS before including this text.
//
// Tile layout: a tile of E elements with vector width V is spread over the block in
// vectors of V consecutive elements; slot i of a thread holds flat element
//   ((i / V) * TSR_THREADS + threadIdx.x) * V + i % V      (when that is < E).

namespace tsr {

typedef long long i64;
typedef unsigned long long u64;

/// bf16 and f16 values are kept as their raw 16 bits; arithmetic converts to f32.
struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };
struct alignas(16) u32x4 { unsigned x, y, z, w; };

__device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float nan() { return __int_as_float(0x7fffffff); }

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((unsigned)x.bits) << 16); }
__device__ __forceinline__ float to_f32(f16 x) {
  float r;
  asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(x.bits));
  return r;
}
__device__ __forceinline__ float to_f32(int x) { return (float)x; }
__device__ __forceinline__ float to_f32(unsigned x) { return (float)x; }
__device__ __forceinline__ float to_f32(i64 x) { return (float)x; }
__device__ __forceinline__ float to_f32(bool x) { return x ? 1.0f : 0.0f; }

/// Conversion with the interpreter's semantics: round-to-nearest-even to 16-bit floats,
/// truncating and saturating float-to-int (NaN -> 0), != 0 to bool.
template <typename T> struct Cvt;
template <> struct Cvt<float> {
  template <typename S> __device__ static float from(S x) { return to_f32(x); }
  __device__ static float from(i64 x) { return (float)x; }
};
template <> struct Cvt<bf16> {
  template <typename S> __device__ static bf16 from(S x) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(to_f32(x)));
    return r;
  }
  __device__ static bf16 from(bf16 x) { return x; }
};
template <> struct Cvt<f16> {
  template <typename S> __device__ static f16 from(S x) {
    f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(to_f32(x)));
    return r;
  }
  __device__ static f16 from(f16 x) { return x; }
};
template <> struct Cvt<int> {
  __device__ static int from(float x) { return __float2int_rz(x); }
  __device__ static int from(bf16 x) { return __float2int_rz(to_f32(x)); }
  __device__ static int from(f16 x) { return __float2int_rz(to_f32(x)); }
  __device__ static int from(int x) { return x; }
  __device__ static int from(unsigned x) { return (int)x; }
  __device__ static int from(i64 x) { return (int)x; }
  __device__ static int from(bool x) { return x ? 1 : 0; }
};
template <> struct Cvt<unsigned> {
  __device__ static unsigned from(float x) { return __float2uint_rz(x); }
  __device__ static unsigned from(bf16 x) { return __float2uint_rz(to_f32(x)); }
  __device__ static unsigned from(f16 x) { return __float2uint_rz(to_f32(x)); }
  __device__ static unsigned from(int x) { return (unsigned)x; }
  __device__ static unsigned from(unsigned x) { return x; }
  __device__ static unsigned from(i64 x) { return (unsigned)x; }
  __device__ static unsigned from(bool x) { return x ? 1u : 0u; }
};
template <> struct Cvt<i64> {
  __device__ static i64 from(float x) { return __float2ll_rz(x); }
  __device__ static i64 from(bf16 x) { return __float2ll_rz(to_f32(x)); }
  __device__ static i64 from(f16 x) { return __float2ll_rz(to_f32(x)); }
  __device__ static i64 from(int x) { return (i64)x; }
  __device__ static i64 from(unsigned x) { return (i64)x; }
  __device__ static i64 from(i64 x) { return x; }
  __device__ static i64 from(bool x) { return x ? 1 : 0; }
};
template <> struct Cvt<bool> {
  template <typename S> __device__ static bool from(S x) { return to_f32(x) != 0.0f; }
  __device__ static bool from(int x) { return x != 0; }
  __device__ static bool from(unsigned x) { return x != 0; }
  __device__ static bool from(i64 x) { return x != 0; }
  __device__ static bool from(bool x) { return x; }
};
template <typename T, typename S> __device__ __forceinline__ T cvt(S x) { return Cvt<T>::from(x); }

/// fmaxf/fminf semantics (a NaN operand yields the other one) on f32; plain on ints.
__device__ __forceinline__ float vmax(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ float vmin(float a, float b) { return fminf(a, b); }
template <typename T> __device__ __forceinline__ T vmax(T a, T b) { return a > b ? a : b; }
template <typename T> __device__ __forceinline__ T vmin(T a, T b) { return a < b ? a : b; }

__device__ __forceinline__ int lane() { return (int)(threadIdx.x & 31); }

/// `c` when it indexes a tile of `n` elements, else 0: slots past the end of a tile must
/// not read past the end of a shared-memory copy (their results are masked anyway).
__device__ __forceinline__ int clamp_index(int c, int n) { return c < n ? c : 0; }

/// Flat element index held by slot `i` of this thread in a tile of vector width V; for a
/// replicated tile (REP) every warp holds the whole tile, element `lane` in slot 0.
template <int V, bool REP = false> __device__ __forceinline__ int flat(int i) {
  return REP ? lane() : ((i / V) * TSR_THREADS + (int)threadIdx.x) * V + i % V;
}
/// That layout as a type (see Frag below): which element a slot holds, who writes it.
template <int V, bool REP = false> struct RoundRobin {
  __device__ static int flat(int i) { return tsr::flat<V, REP>(i); }
  __device__ static bool writes() { return !REP || threadIdx.x < 32; }
};

/// Tensor-core fragment layout of an [M, N] tile (M % 16 == 0, or M < 16 padded to one
/// strip whose rows past M are computed and never stored): the layout of mma.sync m16n8
/// accumulators, so a `dot` result stays in registers and the softmax around it needs no
/// shared memory. The warps form a WM x WN grid (WM * WN = TSR_THREADS / 32):
/// warp w owns the 16-row strips s * WM + w % WM and the column block w / WM of N / WN
/// columns. Slot (s * NT + t) * 4 + e holds strip s, 8-column tile t of the block, and
/// accumulator register e: row g + 8 * (e / 2), column 2 * q + e % 2 of the 16x8 tile,
/// where g = lane / 4 and q = lane % 4 (the PTX ISA's fragment layout).
template <int M, int N, int WM> struct Frag {
  static constexpr int WN = TSR_THREADS / 32 / WM;
  static constexpr int NT = N / 8 / WN;     // 8-column tiles per warp
  static constexpr int MS = (M + 15) / 16 / WM;  // 16-row strips per warp
  static constexpr int SLOTS = MS * NT * 4;
  __device__ static int row(int i) {
    const int w = (int)(threadIdx.x >> 5), g = lane() >> 2;
    return ((i / (4 * NT)) * WM + w % WM) * 16 + g + ((i & 3) >> 1) * 8;
  }
  __device__ static int flat(int i) {
    const int w = (int)(threadIdx.x >> 5), q = lane() & 3;
    const int col = ((w / WM) * NT + (i % (4 * NT)) / 4) * 8 + q * 2 + (i & 1);
    return row(i) * N + col;
  }
  /// The slot of RowFrag<M, WM> holding the row of slot i.
  __device__ static constexpr int row_slot(int i) { return (i / (4 * NT)) * 2 + (i & 3) / 2; }
  __device__ static bool writes() { return true; }
};

/// The rows of a Frag: an [M] tile (row maxima, sums, rescale factors) held by every
/// thread for the rows of its strips, slot 2 * s + h = row (s * WM + w % WM) * 16 + g +
/// 8 * h. The 4 lanes of a quad and the WN column warps hold the same values; one of them
/// writes.
template <int M, int WM> struct RowFrag {
  static constexpr int WN = TSR_THREADS / 32 / WM;
  __device__ static int flat(int i) {
    const int w = (int)(threadIdx.x >> 5), g = lane() >> 2;
    return ((i >> 1) * WM + w % WM) * 16 + g + (i & 1) * 8;
  }
  __device__ static bool writes() { return (lane() & 3) == 0 && (int)(threadIdx.x >> 5) < WM; }
};

/// Writes this thread's slots of a tile of layout L (RoundRobin, Frag, RowFrag) into
/// shared memory (flat row-major order); of elements several threads hold, one writes.
template <int E, typename L, int N, typename D, typename S>
__device__ __forceinline__ void stash(D* s, const S (&x)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    int f = L::flat(i);
    if (f < E && L::writes()) s[f] = cvt<D>(x[i]);
  }
}
/// The same for round-robin vectors of V (replicated with REP).
template <int E, int V, bool REP = false, int N, typename D, typename S>
__device__ __forceinline__ void stash(D* s, const S (&x)[N]) {
  stash<E, RoundRobin<V, REP>>(s, x);
}

/// Reads this thread's slots of a tile of layout L back from shared memory.
template <int E, typename L, int N, typename D, typename S>
__device__ __forceinline__ void unstash(D (&x)[N], const S* s) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    int f = L::flat(i);
    if (f < E) x[i] = cvt<D>(s[f]);
  }
}
template <int E, int V, bool REP = false, int N, typename D, typename S>
__device__ __forceinline__ void unstash(D (&x)[N], const S* s) {
  unstash<E, RoundRobin<V, REP>>(x, s);
}

/// Element `src` (a lane) of a replicated tile, read by every lane of the warp.
template <typename T> __device__ __forceinline__ T shfl(T x, int src) { return __shfl_sync(0xffffffffu, x, src); }
__device__ __forceinline__ bool shfl(bool x, int src) { return __shfl_sync(0xffffffffu, (int)x, src) != 0; }
__device__ __forceinline__ bf16 shfl(bf16 x, int src) {
  bf16 r;
  r.bits = (unsigned short)__shfl_sync(0xffffffffu, (unsigned)x.bits, src);
  return r;
}
__device__ __forceinline__ f16 shfl(f16 x, int src) {
  f16 r;
  r.bits = (unsigned short)__shfl_sync(0xffffffffu, (unsigned)x.bits, src);
  return r;
}

/// Copies BYTES (4, 8 or 16) between suitably aligned addresses as one access.
template <int BYTES> __device__ __forceinline__ void copy_vec(void* dst, const void* src);
template <> __device__ __forceinline__ void copy_vec<16>(void* dst, const void* src) {
  *reinterpret_cast<u32x4*>(dst) = *reinterpret_cast<const u32x4*>(src);
}
template <> __device__ __forceinline__ void copy_vec<8>(void* dst, const void* src) {
  *reinterpret_cast<u64*>(dst) = *reinterpret_cast<const u64*>(src);
}
template <> __device__ __forceinline__ void copy_vec<4>(void* dst, const void* src) {
  *reinterpret_cast<unsigned*>(dst) = *reinterpret_cast<const unsigned*>(src);
}
/// Copies COUNT * CHUNK contiguous bytes in CHUNK-sized accesses.
template <int CHUNK, int COUNT> __device__ __forceinline__ void copy_chunks(void* dst, const void* src) {
#pragma unroll
  for (int c = 0; c < COUNT; ++c)
    copy_vec<CHUNK>(reinterpret_cast<char*>(dst) + c * CHUNK, reinterpret_cast<const char*>(src) + c * CHUNK);
}
__device__ __forceinline__ bool aligned(const void* p, int bytes) { return (reinterpret_cast<u64>(p) & (bytes - 1)) == 0; }
/// Whether the element offsets `c * stride` of an axis of `n` coordinates (a tile's, or a
/// gathered axis's whole extent) fit an int (either sign), so the access's fast path can
/// address it in 32-bit arithmetic.
__device__ __forceinline__ bool tile_offset32(i64 stride, i64 n) {
  const i64 s = stride < 0 ? -stride : stride;
  return s * (i64)n < 2147483647ll;
}

// ---- reductions ---------------------------------------------------------------------

template <typename T> struct Limits;
template <> struct Limits<float> {
  __device__ static float lowest() { return -inf(); }
  __device__ static float highest() { return inf(); }
};
template <> struct Limits<int> {
  __device__ static int lowest() { return -2147483647 - 1; }
  __device__ static int highest() { return 2147483647; }
};
template <> struct Limits<unsigned> {
  __device__ static unsigned lowest() { return 0u; }
  __device__ static unsigned highest() { return 0xffffffffu; }
};
template <> struct Limits<i64> {
  __device__ static i64 lowest() { return -9223372036854775807LL - 1; }
  __device__ static i64 highest() { return 9223372036854775807LL; }
};

struct SumOp {
  template <typename T> __device__ static T identity() { return T(0); }
  template <typename T> __device__ static T combine(T a, T b) { return a + b; }
};
struct MaxOp {
  template <typename T> __device__ static T identity() { return Limits<T>::lowest(); }
  template <typename T> __device__ static T combine(T a, T b) { return vmax(a, b); }
};
struct MinOp {
  template <typename T> __device__ static T identity() { return Limits<T>::highest(); }
  template <typename T> __device__ static T combine(T a, T b) { return vmin(a, b); }
};

template <typename T> __device__ __forceinline__ T shfl_xor(T x, int m) { return __shfl_xor_sync(0xffffffffu, x, m); }

/// Reduces `src`, viewed as [OUTER][L][INNER] in shared memory, over its middle axis into
/// dst[OUTER * INNER]. A short axis with many outputs (the split combine's [splits, D], a
/// group maximum over [G, clusters]) takes one thread per output walking L in order, the
/// neighbouring threads reading neighbouring words; otherwise one warp per output element,
/// lanes striding over L, then a shuffle tree.
template <int OUTER, int L, int INNER, typename Op, typename T>
__device__ __forceinline__ void reduce_axis(T* dst, const T* src) {
  constexpr int OUTS = OUTER * INNER, WARPS = TSR_THREADS / 32;
  constexpr int THREAD_COST = L * ((OUTS + TSR_THREADS - 1) / TSR_THREADS);
  constexpr int WARP_COST = ((OUTS + WARPS - 1) / WARPS) * ((L + 31) / 32 + 10);
  if (THREAD_COST <= WARP_COST) {
    for (int o = threadIdx.x; o < OUTS; o += TSR_THREADS) {
      const int outer = o / INNER, inner = o % INNER;
      T acc = Op::template identity<T>();
#pragma unroll 8
      for (int l = 0; l < L; ++l) acc = Op::combine(acc, src[(outer * L + l) * INNER + inner]);
      dst[o] = acc;
    }
    return;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = warp; o < OUTER * INNER; o += TSR_THREADS / 32) {
    const int outer = o / INNER, inner = o % INNER;
    T acc = Op::template identity<T>();
    for (int l = lane; l < L; l += 32) acc = Op::combine(acc, src[(outer * L + l) * INNER + inner]);
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) acc = Op::combine(acc, shfl_xor(acc, m));
    if (lane == 0) dst[o] = acc;
  }
}

/// True when (v, i) beats (best, bi): larger value, ties to the smaller index, NaN last.
template <typename T> __device__ __forceinline__ bool beats(T v, int i, T best, int bi, bool have) {
  if (!have) return true;
  if (v != v) return false;
  if (best != best) return true;
  return v > best || (v == best && i < bi);
}

/// Warp-wide arg-best of per-lane candidates (value, index, have).
template <typename T> __device__ __forceinline__ void warp_argbest(T& v, int& i, int& have) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    T v2 = shfl_xor(v, m);
    int i2 = shfl_xor(i, m), h2 = shfl_xor(have, m);
    if (h2 && beats(v2, i2, v, i, have != 0)) { v = v2; i = i2; have = 1; }
  }
}

/// Argmax of `src` viewed as [OUTER][L][INNER] over the middle axis into dst (i32).
template <int OUTER, int L, int INNER, typename T>
__device__ __forceinline__ void argmax_axis(int* dst, const T* src) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = warp; o < OUTER * INNER; o += TSR_THREADS / 32) {
    const int outer = o / INNER, inner = o % INNER;
    T best = Limits<T>::lowest();
    int bi = 0, have = 0;
    for (int l = lane; l < L; l += 32) {
      T v = src[(outer * L + l) * INNER + inner];
      if (beats(v, l, best, bi, have != 0)) { best = v; bi = l; have = 1; }
    }
    warp_argbest(best, bi, have);
    if (lane == 0) dst[o] = bi;
  }
}

/// An unsigned key with the order of `beats` on values: larger value → larger key,
/// NaN lowest ("NaN last"), -0.0 equal to 0.0. Ties are broken by index separately.
__device__ __forceinline__ unsigned order_key(float v) {
  if (v != v) return 0u;
  if (v == 0.0f) return 0x80000000u;
  const unsigned b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ unsigned order_key(int v) { return (unsigned)v ^ 0x80000000u; }
template <typename T> __device__ __forceinline__ unsigned order_key(T v) { return order_key((float)v); }

/// Block-wide exclusive prefix sum of one value (int or float) per thread, in thread
/// order, and the total. `red` holds TSR_THREADS / 32 values no other call is using.
template <typename T> __device__ __forceinline__ T block_exclusive_scan(T x, T* red, T& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T inc = x;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += y;
  }
  if (lane == 31) red[warp] = inc;
  __syncthreads();
  T base = T(0);
  total = T(0);
#pragma unroll
  for (int w = 0; w < TSR_THREADS / 32; ++w) {
    const T s = red[w];
    base += w < warp ? s : T(0);
    total += s;
  }
  return base + inc - x;
}

/// Inclusive prefix sum, in place, of N values (int or float) in shared memory: each
/// thread sums a contiguous run of them, one block scan of the runs' totals gives every
/// run its base, and each thread rewrites its run. `red`: TSR_THREADS / 32 values no other
/// call is using. Ends with a barrier.
template <int N, typename T> __device__ __forceinline__ void scan_inplace(T* s, T* red) {
  constexpr int E = (N + TSR_THREADS - 1) / TSR_THREADS;
  const int first = threadIdx.x * E;
  T run = T(0);
#pragma unroll
  for (int j = 0; j < E; ++j)
    if (first + j < N) run += s[first + j];
  T total;
  T acc = block_exclusive_scan(run, red, total);
#pragma unroll
  for (int j = 0; j < E; ++j) {
    if (first + j < N) {
      acc += s[first + j];
      s[first + j] = acc;
    }
  }
  __syncthreads();
}

/// Sort slots of [`topk_row_block`]: the power of two ≥ K.
template <int K> __host__ __device__ constexpr int topk_sort_slots() {
  int p = 1;
  while (p < K) p <<= 1;
  return p;
}

/// Top-K of one row of L values with the whole block (radix select, then a sort):
/// 1. the K-th largest order key `t` is found 8 bits at a time (4 passes, each a
///    shared-memory histogram of the keys that match the digits found so far);
/// 2. every key > t and the first (K − #greater) keys == t in index order are compacted
///    as 64-bit sort words (key, ~index) with block prefix sums over per-thread chunks;
/// 3. a bitonic sort of the words (descending: value, then lower index) orders them;
///    unless SORTED is false: then the compaction's order stands (keys > t, then keys == t,
///    each in index order).
/// ~4·2 + 2 + log²(K)/2 barriers and O(L + K log² K) work (a rank sort was O(K²)).
/// `scratch`: 8 · topk_sort_slots<K>() bytes + 256 + 4 · (TSR_THREADS / 32) + 2 ints.
template <int L, int K, bool SORTED = true, typename T>
__device__ __forceinline__ void topk_row_block(T* vals, int* idx, const T* src, unsigned char* scratch) {
  constexpr int NW = TSR_THREADS / 32;
  constexpr int P = topk_sort_slots<K>();
  unsigned long long* word = reinterpret_cast<unsigned long long*>(scratch);
  int* hist = reinterpret_cast<int*>(scratch + 8 * P);
  int* red = hist + 256;
  int* pick = red + 2 * NW;
  // 1. Radix select. `want`: how many keys matching `prefix` (under `mask`) are still to
  // be taken; K <= L, so the digit below always exists.
  unsigned prefix = 0u, mask = 0u;
  int want = K;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += TSR_THREADS) hist[i] = 0;
    __syncthreads();
    // Keys cluster in few digits (the first pass sees sign and exponent): lanes with
    // the same digit add once per warp instead of contending on one counter.
    for (int i0 = 0; i0 < L; i0 += TSR_THREADS) {
      const int i = i0 + threadIdx.x;
      const unsigned key = i < L ? order_key(src[i]) : 0u;
      const bool hit = i < L && (key & mask) == prefix;
      const unsigned d = hit ? (key >> shift) & 255u : 256u;
      const unsigned peers = __match_any_sync(0xffffffffu, d);
      if (hit && __ffs(peers) - 1 == (int)(threadIdx.x & 31)) atomicAdd(&hist[d], __popc(peers));
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l owns digits 255 − 8l … 248 − 8l (descending); a warp scan finds the lane
      // where the running count from the top reaches `want`.
      const int lane = threadIdx.x;
      int c[8], local = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        c[e] = hist[255 - (lane * 8 + e)];
        local += c[e];
      }
      int inc = local;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += y;
      }
      int above = inc - local;
      if (above < want && want <= inc) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          if (above + c[e] >= want) {
            pick[0] = 255 - (lane * 8 + e);
            pick[1] = above;
            break;
          }
          above += c[e];
        }
      }
    }
    __syncthreads();
    prefix |= (unsigned)pick[0] << shift;
    mask |= 255u << shift;
    want -= pick[1];
  }
  const unsigned t = prefix;
  // 2. Compaction (index order within each class, so ties keep the lowest indices).
  constexpr int E = (L + TSR_THREADS - 1) / TSR_THREADS;
  const int first = threadIdx.x * E;
  int n_gt = 0, n_eq = 0;
  for (int j = 0; j < E; ++j) {
    if (first + j >= L) break;
    const unsigned key = order_key(src[first + j]);
    n_gt += key > t ? 1 : 0;
    n_eq += key == t ? 1 : 0;
  }
  int total_gt, total_eq;
  int pos_gt = block_exclusive_scan(n_gt, red, total_gt);
  int pos_eq = block_exclusive_scan(n_eq, red + NW, total_eq);
  for (int j = 0; j < E; ++j) {
    const int i = first + j;
    if (i >= L) break;
    const unsigned key = order_key(src[i]);
    const unsigned long long w = ((unsigned long long)key << 32) | (unsigned)~i;
    if (key > t) {
      word[pos_gt++] = w;
    } else if (key == t) {
      if (pos_eq < want) word[total_gt + pos_eq] = w;
      ++pos_eq;
    }
  }
  // Padding words (0) sort after every real one (whose low half ~i is > 0).
  for (int s = K + threadIdx.x; s < P; s += TSR_THREADS) word[s] = 0ull;
  __syncthreads();
  // 3. Bitonic sort, descending.
  for (int k = 2; SORTED && k <= P; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = threadIdx.x; i < P / 2; i += TSR_THREADS) {
        const int a = 2 * i - (i & (j - 1));
        const unsigned long long x = word[a], y = word[a + j];
        if ((a & k) == 0 ? x < y : x > y) {
          word[a] = y;
          word[a + j] = x;
        }
      }
      __syncthreads();
    }
  }
  for (int r = threadIdx.x; r < K; r += TSR_THREADS) {
    const int i = (int)~(unsigned)(word[r] & 0xffffffffull);
    vals[r] = src[i];
    idx[r] = i;
  }
  __syncthreads();
}

/// Top-K along the last axis of `src` viewed as [R][L]: values (descending, ties to the
/// smaller index, NaN last) and indices into vals/idx [R][K]. `scratch` holds
/// max(R · L, 8 · topk_sort_slots<K>() + 4 · (256 + 2 · 32 + 2)) bytes.
/// Few long rows (fewer rows than warps, or L ≥ 1024), or unsorted (SORTED false, the
/// order of [`topk_row_block`] without its sort): each row by the whole block
/// ([`topk_row_block`]: ~10 + log²(K)/2 barriers). Otherwise one warp per row, K rounds
/// of a warp-wide arg-best (cheap for short rows, no barriers).
template <int R, int L, int K, bool SORTED = true, typename T>
__device__ __forceinline__ void topk_rows(T* vals, int* idx, const T* src, unsigned char* scratch) {
  if constexpr (!SORTED || R < TSR_THREADS / 32 || L >= 1024) {
    for (int r = 0; r < R; ++r) topk_row_block<L, K, SORTED>(vals + r * K, idx + r * K, src + r * L, scratch);
    return;
  }
  unsigned char* taken = scratch;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < R; r += TSR_THREADS / 32) {
    for (int l = lane; l < L; l += 32) taken[r * L + l] = 0;
    __syncwarp();
    for (int k = 0; k < K; ++k) {
      T best = Limits<T>::lowest();
      int bi = 0, have = 0;
      for (int l = lane; l < L; l += 32) {
        if (taken[r * L + l]) continue;
        T v = src[r * L + l];
        if (beats(v, l, best, bi, have != 0)) { best = v; bi = l; have = 1; }
      }
      warp_argbest(best, bi, have);
      if (lane == 0) {
        vals[r * K + k] = best;
        idx[r * K + k] = bi;
        taken[r * L + bi] = 1;
      }
      __syncwarp();
    }
  }
}

// ---- asynchronous global -> shared copies (cp.async, sm_80+) -------------------------

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}

/// Starts COUNT copies of CHUNK bytes from global to shared memory; when `on` is false
/// nothing is read and the destination is zero-filled.
template <int CHUNK, int COUNT> __device__ __forceinline__ void cp_async_chunks(void* dst, const void* src, bool on) {
#pragma unroll
  for (int c = 0; c < COUNT; ++c) {
    const unsigned d = smem_addr(reinterpret_cast<char*>(dst) + c * CHUNK);
    const char* g = reinterpret_cast<const char*>(src) + c * CHUNK;
    if (CHUNK == 16) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(g), "r"(on ? 16 : 0));
    } else {
      asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(d), "l"(g), "n"(CHUNK), "r"(on ? CHUNK : 0));
    }
  }
}
/// `cp_async_chunks` to the shared address `dst` (from `smem_addr`). A masked-off copy
/// (source size 0) zero-fills without reading its source, so `src` need not be valid then.
template <int CHUNK, int COUNT> __device__ __forceinline__ void cp_async_to(unsigned dst, const void* src, bool on) {
#pragma unroll
  for (int c = 0; c < COUNT; ++c) {
    const char* g = reinterpret_cast<const char*>(src) + c * CHUNK;
    if (CHUNK == 16) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst + c * CHUNK), "l"(g), "r"(on ? 16 : 0));
    } else {
      asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(dst + c * CHUNK), "l"(g), "n"(CHUNK),
                   "r"(on ? CHUNK : 0));
    }
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
/// Waits until at most N committed groups are still in flight (the prefetches of the
/// next iterations of a pipelined loop).
template <int N> __device__ __forceinline__ void cp_async_wait_pending() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// ---- mma.sync dot products -------------------------------------------------------------

/// One m16n8k16 tensor-core step with f32 accumulation (row-major A, column-major B).
template <typename T> __device__ __forceinline__ void mma_16816(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]);
template <> __device__ __forceinline__ void mma_16816<bf16>(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma_16816<f16>(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ unsigned pack2(unsigned short lo, unsigned short hi) { return (unsigned)lo | ((unsigned)hi << 16); }

/// C[M][N] (f32, row stride N) = A[M][K] x B, with A in shared memory at row stride LDA
/// and B either [K][N] (row stride LDB) or, when TRANS_B, [N][K] (row stride LDB).
/// Needs K % 16 == 0 and N % 8 == 0; rows of A past M read as zero.
/// The 16x8 output fragments are dealt round-robin to the warps.
template <typename T, int M, int N, int K, int LDA, int LDB, bool TRANS_B>
__device__ __forceinline__ void mma_tile(float* C, const T* A, const T* B) {
  const unsigned short* a16 = reinterpret_cast<const unsigned short*>(A);
  const unsigned short* b16 = reinterpret_cast<const unsigned short*>(B);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, tq = lane & 3;
  constexpr int MT = (M + 15) / 16, NT = N / 8, WARPS = TSR_THREADS / 32;
  for (int frag = warp; frag < MT * NT; frag += WARPS) {
    const int m0 = (frag / NT) * 16, n0 = (frag % NT) * 8;
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    const int r0 = m0 + g, r1 = m0 + g + 8;
#pragma unroll 4
    for (int k0 = 0; k0 < K; k0 += 16) {
      unsigned a[4], b[2];
      const int ka = k0 + tq * 2;
      a[0] = r0 < M ? *reinterpret_cast<const unsigned*>(a16 + r0 * LDA + ka) : 0u;
      a[1] = r1 < M ? *reinterpret_cast<const unsigned*>(a16 + r1 * LDA + ka) : 0u;
      a[2] = r0 < M ? *reinterpret_cast<const unsigned*>(a16 + r0 * LDA + ka + 8) : 0u;
      a[3] = r1 < M ? *reinterpret_cast<const unsigned*>(a16 + r1 * LDA + ka + 8) : 0u;
      const int n = n0 + g;
      if (TRANS_B) {
        b[0] = *reinterpret_cast<const unsigned*>(b16 + n * LDB + ka);
        b[1] = *reinterpret_cast<const unsigned*>(b16 + n * LDB + ka + 8);
      } else {
        b[0] = pack2(b16[ka * LDB + n], b16[(ka + 1) * LDB + n]);
        b[1] = pack2(b16[(ka + 8) * LDB + n], b16[(ka + 9) * LDB + n]);
      }
      mma_16816<T>(c, a, b);
    }
    const int col = n0 + tq * 2;
    if (r0 < M) { C[r0 * N + col] = c[0]; C[r0 * N + col + 1] = c[1]; }
    if (r1 < M) { C[r1 * N + col] = c[2]; C[r1 * N + col + 1] = c[3]; }
  }
}

/// ldmatrix: four (x4) or two (x2) 8x8 b16 matrices, rows addressed by lanes 0-31 / 0-15;
/// `.trans` hands each thread a column pair instead of a row pair.
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2(unsigned (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2_trans(unsigned (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
               : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(p)));
}

/// The B fragments of 8-column tile `n0` (and, with `PAIR`, of `n0 + 8`) for k-step k0:
/// B is [N][K] in shared memory (TRANS_B, row stride LDB) or [K][N]. Row addresses must
/// be 16-byte aligned (LDB * sizeof(T) % 16 == 0).
template <int LDB, bool TRANS_B, bool PAIR>
__device__ __forceinline__ void load_b(unsigned (&b0)[2], unsigned (&b1)[2], const unsigned short* B, int n0, int k0) {
  const int l = lane();
  if (PAIR) {
    unsigned r[4];
    if (TRANS_B) {
      ldsm_x4(r, B + (n0 + (l & 7) + ((l >> 4) << 3)) * LDB + k0 + ((l >> 3) & 1) * 8);
    } else {
      ldsm_x4_trans(r, B + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * LDB + n0 + (l >> 4) * 8);
    }
    b0[0] = r[0]; b0[1] = r[1]; b1[0] = r[2]; b1[1] = r[3];
  } else {
    const int ll = l & 15;
    if (TRANS_B) {
      ldsm_x2(b0, B + (n0 + (ll & 7)) * LDB + k0 + (ll >> 3) * 8);
    } else {
      ldsm_x2_trans(b0, B + (k0 + (ll & 7) + (ll >> 3) * 8) * LDB + n0);
    }
  }
}

/// The B-operand loop of a Frag product: for every 8-column tile of this warp's block,
/// c[strip s] += a · B[k0 .. k0 + 16).
template <typename T, int N, int LDB, bool TRANS_B, int WM, int NT, int S>
__device__ __forceinline__ void mma_frag_step(float (&c)[S], const unsigned (&a)[4], const unsigned short* B, int s, int k0) {
  const int col0 = (int)(threadIdx.x >> 5) / WM * NT * 8;
  if (NT % 2 == 0) {
#pragma unroll
    for (int t = 0; t < NT; t += 2) {
      unsigned b0[2], b1[2];
      load_b<LDB, TRANS_B, true>(b0, b1, B, col0 + t * 8, k0);
      mma_16816<T>(*reinterpret_cast<float(*)[4]>(&c[(s * NT + t) * 4]), a, b0);
      mma_16816<T>(*reinterpret_cast<float(*)[4]>(&c[(s * NT + t + 1) * 4]), a, b1);
    }
  } else {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      unsigned b0[2], b1[2];
      load_b<LDB, TRANS_B, false>(b0, b1, B, col0 + t * 8, k0);
      mma_16816<T>(*reinterpret_cast<float(*)[4]>(&c[(s * NT + t) * 4]), a, b0);
    }
  }
}

/// c = A[M][K] · B into Frag<M, N, WM> registers (no shared-memory round trip): A in
/// shared memory at row stride LDA, B as for mma_tile; ldmatrix operand loads, each A
/// fragment used for every column tile of the warp.
template <typename T, int M, int N, int K, int LDA, int LDB, bool TRANS_B, int WM, int S>
__device__ __forceinline__ void mma_frag(float (&c)[S], const T* A, const T* B) {
  using L = Frag<M, N, WM>;
  static_assert(S == L::SLOTS, "accumulator slots");
  const unsigned short* a16 = reinterpret_cast<const unsigned short*>(A);
  const unsigned short* b16 = reinterpret_cast<const unsigned short*>(B);
  const int l = lane(), wm = (int)(threadIdx.x >> 5) % WM;
#pragma unroll
  for (int i = 0; i < S; ++i) c[i] = 0.f;
#pragma unroll
  for (int s = 0; s < L::MS; ++s) {
    const int m0 = (s * WM + wm) * 16;
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 16) {
      unsigned a[4];
      // Rows past M (a padded strip) repeat row M - 1: only padding rows of C see them.
      ldsm_x4(a, a16 + min(m0 + (l & 15), M - 1) * LDA + k0 + (l >> 4) * 8);
      mma_frag_step<T, N, LDB, TRANS_B, WM, L::NT>(c, a, b16, s, k0);
    }
  }
}

template <typename T> __device__ __forceinline__ unsigned pack_pair(T lo, T hi) { return pack2(lo.bits, hi.bits); }

/// c = P · B into Frag<M, N, WM> registers with P [M][K] itself a Frag<M, K, WM> tile in
/// registers (the FlashAttention-2 trick: the accumulator layout of two adjacent 8-column
/// tiles is the A-operand layout of one 16-wide k-step). Needs WN == 1 (every warp holds
/// whole rows of P).
template <typename T, int M, int N, int K, int LDB, bool TRANS_B, int WM, int S, int SP>
__device__ __forceinline__ void mma_frag_ra(float (&c)[S], const T (&p)[SP], const T* B) {
  using L = Frag<M, N, WM>;
  using LP = Frag<M, K, WM>;
  static_assert(S == L::SLOTS && SP == LP::SLOTS && LP::WN == 1, "register A operand");
  const unsigned short* b16 = reinterpret_cast<const unsigned short*>(B);
#pragma unroll
  for (int i = 0; i < S; ++i) c[i] = 0.f;
#pragma unroll
  for (int s = 0; s < L::MS; ++s) {
#pragma unroll
    for (int k0 = 0; k0 < K; k0 += 16) {
      const int t = (s * LP::NT + k0 / 8) * 4;
      const unsigned a[4] = {pack_pair(p[t], p[t + 1]), pack_pair(p[t + 2], p[t + 3]), pack_pair(p[t + 4], p[t + 5]),
                             pack_pair(p[t + 6], p[t + 7])};
      mma_frag_step<T, N, LDB, TRANS_B, WM, L::NT>(c, a, b16, s, k0);
    }
  }
}

/// Row reduction of a Frag<M, N, WM> tile into RowFrag<M, WM>: the thread's slots, then
/// the 4 lanes of a quad (shuffles), then, when several warps share a row (WN > 1), their
/// partials through `red` (M * WN elements of shared memory, one barrier). Other warps may
/// still read `red` on return: the caller puts a barrier before anything writes it again.
template <typename Op, int M, int N, int WM, int S, int R, typename T>
__device__ __forceinline__ void frag_row_reduce(T (&out)[R], const T (&x)[S], T* red) {
  using L = Frag<M, N, WM>;
  static_assert(S == L::SLOTS && R == 2 * L::MS, "row slots");
#pragma unroll
  for (int r = 0; r < R; ++r) {
    T acc = Op::template identity<T>();
#pragma unroll
    for (int t = 0; t < L::NT; ++t) {
      const int i = ((r >> 1) * L::NT + t) * 4 + (r & 1) * 2;
      acc = Op::combine(acc, Op::combine(x[i], x[i + 1]));
    }
    acc = Op::combine(acc, shfl_xor(acc, 1));
    acc = Op::combine(acc, shfl_xor(acc, 2));
    out[r] = acc;
  }
  if (L::WN > 1) {
    const int w = (int)(threadIdx.x >> 5), wn = w / WM;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = RowFrag<M, WM>::flat(r);  // >= M: a padding row, left alone
      if ((lane() & 3) == 0 && row < M) red[wn * M + row] = out[r];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = RowFrag<M, WM>::flat(r);
      if (row >= M) continue;
      T acc = Op::template identity<T>();
#pragma unroll
      for (int j = 0; j < L::WN; ++j) acc = Op::combine(acc, red[j * M + row]);
      out[r] = acc;
    }
  }
}

/// Column reduction of a Frag<M, N, WM> tile into an [N] tile of layout LO: the thread's
/// rows (padding rows of a padded strip left out), then the 8 row groups of the warp
/// (shuffles), then the WM row warps through `red` (WM * N elements of shared memory, two
/// barriers).
template <typename Op, int M, int N, int WM, typename LO, int R, int S, typename T>
__device__ __forceinline__ void frag_col_reduce(T (&out)[R], const T (&x)[S], T* red) {
  using L = Frag<M, N, WM>;
  static_assert(S == L::SLOTS, "fragment slots");
  const int w = (int)(threadIdx.x >> 5), wm = w % WM, wn = w / WM, q = lane() & 3;
#pragma unroll
  for (int t = 0; t < L::NT; ++t) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      T acc = Op::template identity<T>();
#pragma unroll
      for (int s = 0; s < L::MS; ++s) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int i = (s * L::NT + t) * 4 + h * 2 + e;
          if (L::row(i) < M) acc = Op::combine(acc, x[i]);
        }
      }
      acc = Op::combine(acc, shfl_xor(acc, 4));
      acc = Op::combine(acc, shfl_xor(acc, 8));
      acc = Op::combine(acc, shfl_xor(acc, 16));
      if (lane() < 4) red[wm * N + (wn * L::NT + t) * 8 + q * 2 + e] = acc;
    }
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int f = LO::flat(r);
    if (f >= N) continue;
    T acc = Op::template identity<T>();
#pragma unroll
    for (int j = 0; j < WM; ++j) acc = Op::combine(acc, red[j * N + f]);
    out[r] = acc;
  }
  __syncthreads();
}

/// Copies a row-major [R][COLS] tile of layout L from this thread's slots into shared
/// memory at row stride LD (padding rows avoids bank conflicts in mma_tile).
template <int R, int COLS, int LD, typename L, int N, typename T>
__device__ __forceinline__ void stash_rows(T* s, const T (&x)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    int f = L::flat(i);
    if (f < R * COLS && L::writes()) s[(f / COLS) * LD + f % COLS] = x[i];
  }
}
template <int R, int COLS, int LD, int V, bool REP = false, int N, typename T>
__device__ __forceinline__ void stash_rows(T* s, const T (&x)[N]) {
  if constexpr (!REP && sizeof(T) == 4 && V % 4 == 0 && COLS % 4 == 0 && LD % 4 == 0) {
    // Whole 16-byte vectors (a vector never straddles a row: COLS % 4 == 0).
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const int f = RoundRobin<V, REP>::flat(i);
      if (f < R * COLS && RoundRobin<V, REP>::writes())
        *reinterpret_cast<float4*>(s + (f / COLS) * LD + f % COLS) = *reinterpret_cast<const float4*>(&x[i]);
    }
  } else {
    stash_rows<R, COLS, LD, RoundRobin<V, REP>>(s, x);
  }
}

/// Plain (CUDA-core) product for shapes or dtypes mma_tile does not take: each thread
/// computes the output elements it holds (result layout L: RoundRobin, Frag, RowFrag).
template <int M, int N, int K, int LDA, int LDB, bool TRANS_B, typename L, int NS, typename T>
__device__ __forceinline__ void dot_simt(float (&out)[NS], const T* A, const T* B) {
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    int f = L::flat(i);
    if (f >= M * N) continue;
    int m = f / N, n = f % N;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) {
      float b = TRANS_B ? to_f32(B[n * LDB + k]) : to_f32(B[k * LDB + n]);
      acc += to_f32(A[m * LDA + k]) * b;
    }
    out[i] = acc;
  }
}
/// ... or round-robin vectors of V (replicated with REP).
template <int M, int N, int K, int LDA, int LDB, bool TRANS_B, int V, bool REP = false, int NS, typename T>
__device__ __forceinline__ void dot_simt(float (&out)[NS], const T* A, const T* B) {
  dot_simt<M, N, K, LDA, LDB, TRANS_B, RoundRobin<V, REP>>(out, A, B);
}

/// f32 product of few rows (M ≤ 8, a decode step's query heads) against B^T rows, both in
/// shared memory: `dot_simt` reads two scalars per multiply-add, this reads 16-byte
/// vectors and shares each B vector among the M rows. Thread t takes column n = t % N of
/// K-slice t / N: the A rows are warp-wide broadcasts, and B rows LDB ≡ 4 (mod 8) words
/// apart put the 8 lanes of each vector phase in 32 distinct banks. The slices' partial
/// sums meet in `red` (KS · M · N floats) and land in the result's layout L. The emitter
/// picks KS (N · KS ≤ the block's threads).
template <int M, int N, int K, int LDA, int LDB, int KS, typename L, int NS>
__device__ __forceinline__ void dot_simt_rows(float (&out)[NS], const float* A, const float* B, float* red) {
  constexpr int KC = K / KS;
  static_assert(M <= 8 && K % (4 * KS) == 0 && LDA % 4 == 0 && LDB % 4 == 0, "vector operand rows");
  for (int w = threadIdx.x; w < N * KS; w += TSR_THREADS) {
    const int n = w % N, ks = w / N;
    const float* a = A + ks * KC;
    const float* b = B + n * LDB + ks * KC;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.f;
#pragma unroll 4
    for (int k = 0; k < KC; k += 4) {
      const float4 bv = *reinterpret_cast<const float4*>(b + k);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4 av = *reinterpret_cast<const float4*>(a + m * LDA + k);
        acc[m] = fmaf(av.x, bv.x, acc[m]);
        acc[m] = fmaf(av.y, bv.y, acc[m]);
        acc[m] = fmaf(av.z, bv.z, acc[m]);
        acc[m] = fmaf(av.w, bv.w, acc[m]);
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) red[(ks * M + m) * N + n] = acc[m];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int f = L::flat(i);
    if (f >= M * N) continue;
    const int m = f / N, n = f % N;
    float s = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) s += red[(ks * M + m) * N + n];
    out[i] = s;
  }
}
template <int M, int N, int K, int LDA, int LDB, int KS, int V, bool REP = false, int NS>
__device__ __forceinline__ void dot_simt_rows(float (&out)[NS], const float* A, const float* B, float* red) {
  dot_simt_rows<M, N, K, LDA, LDB, KS, RoundRobin<V, REP>>(out, A, B, red);
}

}  // namespace tsr
// ---- end of the Tessera tile header ------------------------------------------------
