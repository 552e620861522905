/* Requantization: int32 accumulator -> int8, exactly as runtime/requant.py computes it.
 *
 * Three schemes, chosen per model at export time (docs/ARITHMETIC.md has the formulas):
 *   TC_RQ_FIXED_DOUBLE  TFLite Micro / CMSIS-NN: SaturatingRoundingDoublingHighMul, then
 *                       RoundingDivideByPOT. Integer only.
 *   TC_RQ_FIXED_SINGLE  CMSIS-NN's single-rounding variant, one 64-bit rounding shift.
 *   TC_RQ_FLOAT         onnxruntime's QLinearConv: float32 product, round half to even.
 * The functions return the scaled value before the output zero point is added; the caller adds
 * it and clamps (tc_clamp_s8). Static inline because they run once per output element.
 *
 * Build with TC_ENABLE_FLOAT_REQUANT=0 (the Makefile does for fixed-mode models) and no
 * floating-point instruction or soft-float helper is referenced anywhere in the kernels. */
#ifndef TC_REQUANT_H
#define TC_REQUANT_H

#include <stdint.h>

#ifndef TC_ENABLE_FLOAT_REQUANT
#define TC_ENABLE_FLOAT_REQUANT 1
#endif

/* The per-output helpers must be inlined into the kernels' loops even in an -Os image. */
#if defined(__GNUC__)
#define TC_INLINE static inline __attribute__((always_inline))
#else
#define TC_INLINE static inline
#endif

/* ... and a helper that must stay out of line (its caller's hot loop keeps the registers). */
#if defined(__GNUC__)
#define TC_NOINLINE __attribute__((noinline))
#else
#define TC_NOINLINE
#endif

#define TC_RQ_FIXED_DOUBLE 0
#define TC_RQ_FIXED_SINGLE 1
#define TC_RQ_FLOAT 2

/* One output channel's constants for tc_requant_double_fast; fast == 0 when the channel is
 * outside the proven range and must take tc_requantize. */
typedef struct {
    int32_t fast;
    int32_t multiplier;
    int32_t offset; /* 2^(right - 1) + (output zero point << right) */
    int32_t right;
} tc_requant_fast;

/* Per-output-channel constants; per-tensor models repeat one value. */
typedef struct {
    int32_t mode;               /* TC_RQ_* */
    const int32_t *multiplier;  /* fixed: Q31 multiplier per channel */
    const int32_t *shift;       /* fixed: > 0 is a left shift, in [-31, 30] */
    const float *scale;         /* float: float32 multiplier per channel */
    /* conv2d, optional (NULL: every output takes tc_requantize and columns hold x - zero
     * point): computed at export (export/conv_constants.py), per channel */
    const tc_requant_fast *fast; /* the fast requantization's constants */
    const int32_t *folded_bias;  /* bias - input zero point * sum w: the bias of raw inputs */
} tc_requant_params;

/* Arithmetic right shift of a negative value is implementation-defined in C99; every compiler
 * tinyconv supports (gcc, clang, arm-none-eabi-gcc) shifts arithmetically, as CMSIS-NN assumes. */
static inline int32_t tc_requant_fixed_double(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t a = (int32_t)((uint32_t)acc << left); /* wraps like int32 */
    int32_t high;
    int32_t mask, remainder, threshold;
    if (a == INT32_MIN && multiplier == INT32_MIN) {
        high = INT32_MAX;
    } else {
        high = (int32_t)(((int64_t)a * multiplier + ((int64_t)1 << 30)) >> 31);
    }
    mask = (int32_t)(((uint32_t)1 << right) - 1u);
    remainder = high & mask;
    threshold = (mask >> 1) + (high < 0);
    return (high >> right) + (remainder > threshold);
}

static inline int32_t tc_requant_fixed_single(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t total = 31 - shift; /* in [1, 62] */
    const int64_t result = ((int64_t)acc * multiplier + ((int64_t)1 << (total - 1))) >> total;
    /* large left shifts can leave int32; saturating keeps the int8 clamp right */
    return result > INT32_MAX ? INT32_MAX : (result < INT32_MIN ? INT32_MIN : (int32_t)result);
}

#if TC_ENABLE_FLOAT_REQUANT
/* Round half to even without libm: adding and subtracting 1.5 * 2^23 leaves a float32 with no
 * fraction bits, rounded by the FPU's round-to-nearest-even (the IEEE default, which C99 and
 * every tinyconv target start in). Exact for |v| < 2^22; anything larger saturates to int8 after
 * the zero point is added, so it is clamped first. */
static inline int32_t tc_round_half_even(float v)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    volatile float shifted;
    if (v > 4194304.0f) {
        v = 4194304.0f;
    } else if (v < -4194304.0f) {
        v = -4194304.0f;
    }
    shifted = v + magic; /* volatile: keep the float32 rounding even under x87 excess precision */
    return (int32_t)(shifted - magic);
}

static inline int32_t tc_requant_float(int32_t acc, float scale)
{
    return tc_round_half_even((float)acc * scale);
}
#endif

/* Scale acc for output channel ch with the model's scheme. */
static inline int32_t tc_requantize(int32_t acc, const tc_requant_params *rq, int32_t ch)
{
#if TC_ENABLE_FLOAT_REQUANT
    if (rq->mode == TC_RQ_FLOAT) {
        return tc_requant_float(acc, rq->scale[ch]);
    }
#endif
    if (rq->mode == TC_RQ_FIXED_SINGLE) {
        return tc_requant_fixed_single(acc, rq->multiplier[ch], rq->shift[ch]);
    }
    return tc_requant_fixed_double(acc, rq->multiplier[ch], rq->shift[ch]);
}

/* tc_requant_fixed_double for a multiplier other than INT32_MIN, with the shift split once per
 * channel (mask = 2^right - 1, half = mask >> 1): the kernels requantize every output, so the
 * per-channel work is hoisted out. Same two roundings; "remainder > threshold" is the sign of
 * their difference (both lie in [0, 2^31), so it cannot overflow). */
TC_INLINE int32_t tc_requant_double_prepared(int32_t acc, int32_t multiplier, int32_t left,
                                             int32_t right, int32_t mask, int32_t half)
{
    const int32_t a = (int32_t)((uint32_t)acc << left);
    const int32_t high = (int32_t)(((int64_t)a * multiplier + ((int64_t)1 << 30)) >> 31);
    const int32_t threshold = half + (int32_t)((uint32_t)high >> 31);
    const int32_t remainder = high & mask;
    return (high >> right) + (int32_t)((uint32_t)(threshold - remainder) >> 31);
}

/* tc_mulh_round(a, b) from b's halves bh = b >> 16 and bl = b & 0xffff, in 32-bit multiplies:
 * for the Cortex-M0, which has no 64-bit one (__aeabi_lmul is a call of ~40 instructions).
 * Exact: a * b + 2^31 = ah * bh * 2^32 + (ah * bl + al * bh) * 2^16 + al * bl + 2^31, each
 * partial product fits int32, and the parts below 2^16 of the middle ones, the high half of
 * al * bl and the rounding 2^15 are summed before the shift (al * bl's low half cannot carry
 * past 2^32). */
TC_INLINE int32_t tc_mulh_round_halves(int32_t a, int32_t bh, int32_t bl)
{
    const int32_t ah = a >> 16;
    const uint32_t al = (uint32_t)a & 0xffffu;
    const int32_t m1 = ah * bl, m2 = (int32_t)al * bh;
    const uint32_t low = ((uint32_t)m1 & 0xffffu) + ((uint32_t)m2 & 0xffffu) +
                         ((al * (uint32_t)bl) >> 16) + 0x8000u;
    return ah * bh + (m1 >> 16) + (m2 >> 16) + (int32_t)(low >> 16);
}

/* (a * b + 2^31) >> 32, the rounding high multiply: SMMULR on the Cortex-M4, SMULL plus the
 * rounding bit on the Cortex-M3, 32-bit multiplies of b's halves on the Cortex-M0 (above),
 * 64-bit C elsewhere. */
TC_INLINE int32_t tc_mulh_round(int32_t a, int32_t b)
{
#if defined(__thumb2__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#elif defined(__thumb2__)
    int32_t lo, hi;
    __asm__("smull %0, %1, %2, %3" : "=&r"(lo), "=&r"(hi) : "r"(a), "r"(b));
    return hi + (int32_t)((uint32_t)lo >> 31);
#elif defined(__ARM_ARCH_6M__)
    return tc_mulh_round_halves(a, b >> 16, b & 0xffff);
#else
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
#endif
}

/* The largest |accumulator| and right shift for which tc_requant_double_fast equals
 * tc_requant_fixed_double (docs/ARITHMETIC.md, "The fast double rounding"). */
#define TC_RQ_FAST_ACC_LIMIT ((int64_t)1 << 29)
#define TC_RQ_FAST_MAX_RIGHT 21

/* bound: an upper bound on |acc| over every accumulator the channel can produce. */
static inline tc_requant_fast tc_requant_fast_prepare(const tc_requant_params *rq, int32_t ch,
                                                      int64_t bound, int32_t output_zero_point)
{
    tc_requant_fast f;
    const int32_t shift = rq->mode == TC_RQ_FIXED_DOUBLE ? rq->shift[ch] : 0;
    f.fast = rq->mode == TC_RQ_FIXED_DOUBLE && shift <= -1 && shift >= -TC_RQ_FAST_MAX_RIGHT &&
             bound < TC_RQ_FAST_ACC_LIMIT;
    f.multiplier = rq->mode == TC_RQ_FIXED_DOUBLE ? rq->multiplier[ch] : 0;
    f.right = f.fast ? -shift : 1;
    f.offset = (int32_t)(((uint32_t)1 << (f.right - 1)) +
                         (uint32_t)output_zero_point * ((uint32_t)1 << f.right));
    return f;
}

/* tc_requant_fixed_double(acc2 / 2, ...) + output zero point for a fast channel, given the
 * doubled accumulator acc2 = 2 * acc: one rounding high multiply, one add of the rounding
 * offset, one of the sign (round half away from zero), one shift. */
TC_INLINE int32_t tc_requant_double_fast(int32_t acc2, const tc_requant_fast *f)
{
    const int32_t high = tc_mulh_round(acc2, f->multiplier);
    return (high + f->offset + (high >> 31)) >> f->right;
}

/* Divide by count > 0 rounding half away from zero (TFLite's integer average); 0 for count 0,
 * as runtime/ gives for a window that lies wholly in the padding. */
static inline int32_t tc_rounding_divide(int32_t acc, int32_t count)
{
    const int32_t half = count / 2;
    if (count <= 0) {
        return 0;
    }
    return acc > 0 ? (acc + half) / count : -((half - acc) / count);
}

TC_INLINE int8_t tc_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

#endif
