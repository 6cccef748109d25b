// The f16 conversions of the PTX cvt instructions the kernels use, exact to
// the bit: for the host builds of the kernels and for the emulated mma.
#pragma once

#include <cstdint>
#include <cstring>

namespace mpinfer_emu {

// cvt.f32.f16: exact.
inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        // Subnormal: normalise the significand into an f32 exponent.
        uint32_t e = 113;
        while (!(man & 0x400u)) {
            man <<= 1;
            --e;
        }
        bits = sign | (e << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

// Shifts right by `shift` (1..31) rounding to nearest, ties to even.
inline uint32_t shift_round_even(uint32_t v, uint32_t shift) {
    uint32_t q = v >> shift;
    uint32_t rem = v & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1u)));
}

// cvt.rn.f16.f32: round to nearest even, overflow to infinity, NaN to the
// canonical quiet NaN.
inline uint16_t f32_to_f16_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fff;
    // 65520 is halfway between 65504 and 2^16 and rounds (to even) up.
    if (ax >= 0x477ff000u) return sign | 0x7c00u;
    if (ax >= 0x38800000u) {
        // Normal: rebias the exponent, round away 13 significand bits; a
        // carry out of the significand correctly bumps the exponent.
        uint32_t rebiased = ax - ((127u - 15u) << 23);
        return sign | (uint16_t)shift_round_even(rebiased, 13);
    }
    // 2^-25 and below round to zero (2^-25 itself is a tie, to even).
    if (ax <= 0x33000000u) return sign;
    // Subnormal: the significand with its implicit bit, in units of 2^-24.
    uint32_t exp = ax >> 23;
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    return sign | (uint16_t)shift_round_even(man, 126 - exp);
}

}  // namespace mpinfer_emu
