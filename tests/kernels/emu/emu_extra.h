/* tests/kernels/emu/emu_extra.h - intrinsics SIMDe 0.7.4 lacks or gets wrong (gathers, reductions,
 * some conversions, _mm512_madd_epi16) and the AMX tile instructions the kernels use
 * (ldtilecfg, tileloadd, tilestored, tilezero, tdpbusd, tdpbssd) in plain C, per thread. Tile
 * semantics as the Intel SDM: rows/colsb from the loaded palette-1 configuration, int32 C
 * accumulating 4-byte dot products; shape mismatches trap. */
typedef union {
    __m512i v;
    int32_t i[16];
    int16_t h[32];
    float f[16];
} emu_u;
static inline __m512i emu_gather_epi32(__m512i src, uint16_t k, __m512i idx, const void *base,
                                       int sc)
{
    emu_u s, x;
    memcpy(&s, &src, 64);
    memcpy(&x, &idx, 64);
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy(&s.i[i], (const char *)base + (int64_t)x.i[i] * sc, 4);
    return s.v;
}
static inline __m512 emu_gather_ps(__m512 src, uint16_t k, __m512i idx, const void *base, int sc)
{
    __m512i r = emu_gather_epi32(_mm512_castps_si512(src), k, idx, base, sc);
    return _mm512_castsi512_ps(r);
}
#undef _mm512_mask_i32gather_epi32
#undef _mm512_mask_i32gather_ps
#define _mm512_mask_i32gather_epi32(s, k, i, b, sc) emu_gather_epi32(s, k, i, b, sc)
#define _mm512_mask_i32gather_ps(s, k, i, b, sc) emu_gather_ps(s, k, i, b, sc)
static inline __m512i emu_srai_epi32(__m512i a, int n)
{
    emu_u u;
    memcpy(&u, &a, 64);
    for (int i = 0; i < 16; i++) u.i[i] >>= (n > 31 ? 31 : n);
    return u.v;
}
#undef _mm512_srai_epi32
#define _mm512_srai_epi32(a, n) emu_srai_epi32(a, n)
static inline float emu_radd_ps(__m512 a)
{
    emu_u u;
    memcpy(&u, &a, 64);
    /* same tree as GCC's: halves added pairwise */
    float t[16];
    memcpy(t, u.f, 64);
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) t[i] = t[i] + t[i + w];
    return t[0];
}
static inline int emu_radd_epi32(__m512i a)
{
    emu_u u;
    memcpy(&u, &a, 64);
    int s = 0;
    for (int i = 0; i < 16; i++) s += u.i[i];
    return s;
}
static inline float emu_rmax_ps(__m512 a)
{
    emu_u u;
    memcpy(&u, &a, 64);
    float m = u.f[0];
    for (int i = 1; i < 16; i++) m = u.f[i] > m ? u.f[i] : m;
    return m;
}
#undef _mm512_reduce_add_ps
#undef _mm512_reduce_add_epi32
#undef _mm512_reduce_max_ps
#define _mm512_reduce_add_ps(a) emu_radd_ps(a)
#define _mm512_reduce_add_epi32(a) emu_radd_epi32(a)
#define _mm512_reduce_max_ps(a) emu_rmax_ps(a)
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)

/* AMX */
struct emu_tcfg {
    uint8_t pal, sr, res[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};
__attribute__((weak)) __thread struct emu_tcfg emu_cfg; /* one per thread, as the CPU's */
__attribute__((weak)) __thread uint8_t emu_tile[8][16][64];
static inline void emu_loadconfig(const void *c) { memcpy(&emu_cfg, c, 64); }
static inline void emu_tload(int t, const void *p, long stride)
{
    if (emu_cfg.pal != 1) __builtin_trap();
    memset(emu_tile[t], 0, sizeof emu_tile[t]);
    for (int r = 0; r < emu_cfg.rows[t]; r++)
        memcpy(emu_tile[t][r], (const char *)p + r * stride, emu_cfg.colsb[t]);
}
static inline void emu_tstore(int t, void *p, long stride)
{
    if (emu_cfg.pal != 1) __builtin_trap();
    for (int r = 0; r < emu_cfg.rows[t]; r++)
        memcpy((char *)p + r * stride, emu_tile[t][r], emu_cfg.colsb[t]);
}
static inline void emu_tzero(int t) { memset(emu_tile[t], 0, sizeof emu_tile[t]); }
static inline void emu_dpbusd(int c, int a, int b)
{
    int M = emu_cfg.rows[c], N = emu_cfg.colsb[c] / 4, K = emu_cfg.colsb[a] / 4;
    if (emu_cfg.rows[a] != M || emu_cfg.rows[b] != K || emu_cfg.colsb[b] != emu_cfg.colsb[c])
        __builtin_trap();
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            int32_t acc;
            memcpy(&acc, &emu_tile[c][m][4 * n], 4);
            for (int k = 0; k < K; k++)
                for (int i = 0; i < 4; i++)
                    acc += (int32_t)emu_tile[a][m][4 * k + i] *
                           (int32_t)(int8_t)emu_tile[b][k][4 * n + i];
            memcpy(&emu_tile[c][m][4 * n], &acc, 4);
        }
}
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbusd
#undef _tile_release
#define _tile_loadconfig(c) emu_loadconfig(c)
#define _tile_loadd(t, p, s) emu_tload(t, p, s)
#define _tile_stream_loadd(t, p, s) emu_tload(t, p, s)
#define _tile_stored(t, p, s) emu_tstore(t, p, s)
#define _tile_zero(t) emu_tzero(t)
#define _tile_dpbusd(c, a, b) emu_dpbusd(c, a, b)
#define _tile_release() ((void)0)
static inline __m512 emu_cvtepi32_ps(__m512i a)
{
    emu_u u, r;
    memcpy(&u, &a, 64);
    for (int i = 0; i < 16; i++) r.f[i] = (float)u.i[i];
    return _mm512_castsi512_ps(r.v);
}
#undef _mm512_cvtepi32_ps
#define _mm512_cvtepi32_ps(a) emu_cvtepi32_ps(a)
static inline __m512i emu_cvtepu8_epi16(__m256i a)
{
    uint8_t b[32];
    memcpy(b, &a, 32);
    emu_u r;
    for (int i = 0; i < 32; i++) r.h[i] = b[i];
    return r.v;
}
#undef _mm512_cvtepu8_epi16
#define _mm512_cvtepu8_epi16(a) emu_cvtepu8_epi16(a)
static inline __m512 emu_cvtph_ps(__m256i a)
{
    uint16_t b[16];
    memcpy(b, &a, 32);
    emu_u r;
    for (int i = 0; i < 16; i++) r.f[i] = _cvtsh_ss(b[i]);
    return _mm512_castsi512_ps(r.v);
}
#undef _mm512_cvtph_ps
#define _mm512_cvtph_ps(a) emu_cvtph_ps(a)
static inline __m512i emu_cvtps_epi32(__m512 a)
{
    emu_u u, r;
    memcpy(&u, &a, 64);
    for (int i = 0; i < 16; i++) r.i[i] = (int32_t)__builtin_nearbyintf(u.f[i]);
    return r.v;
}
#undef _mm512_cvtps_epi32
#define _mm512_cvtps_epi32(a) emu_cvtps_epi32(a)
static inline __m128i emu_cvtepi32_epi8(__m512i a)
{
    emu_u u;
    memcpy(&u, &a, 64);
    int8_t b[16];
    for (int i = 0; i < 16; i++) b[i] = (int8_t)u.i[i];
    __m128i r;
    memcpy(&r, b, 16);
    return r;
}
#undef _mm512_cvtepi32_epi8
#define _mm512_cvtepi32_epi8(a) emu_cvtepi32_epi8(a)
static inline __m512i emu_shuffle_i64x2(__m512i a, __m512i b, int imm)
{
    __m128i x[4], y[4], r[4];
    memcpy(x, &a, 64);
    memcpy(y, &b, 64);
    r[0] = x[imm & 3];
    r[1] = x[(imm >> 2) & 3];
    r[2] = y[(imm >> 4) & 3];
    r[3] = y[(imm >> 6) & 3];
    __m512i o;
    memcpy(&o, r, 64);
    return o;
}
#undef _mm512_shuffle_i64x2
#define _mm512_shuffle_i64x2(a, b, i) emu_shuffle_i64x2(a, b, i)
static inline __m128i emu_cvtepi32_epi16_256(__m256i a)
{
    int32_t x[8];
    int16_t y[8];
    memcpy(x, &a, 32);
    for (int i = 0; i < 8; i++) y[i] = (int16_t)x[i];
    __m128i r;
    memcpy(&r, y, 16);
    return r;
}
#undef _mm256_cvtepi32_epi16
#define _mm256_cvtepi32_epi16(a) emu_cvtepi32_epi16_256(a)
static inline __m512 emu_maskz_loadu_ps(uint16_t k, const void *p)
{
    emu_u r;
    memset(&r, 0, 64);
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy(&r.f[i], (const char *)p + 4 * i, 4);
    return _mm512_castsi512_ps(r.v);
}
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps(k, p) emu_maskz_loadu_ps(k, p)
static inline __m128i emu_maskz_loadu_epi8_128(uint16_t k, const void *p)
{
    uint8_t b[16] = {0};
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) b[i] = ((const uint8_t *)p)[i];
    __m128i r;
    memcpy(&r, b, 16);
    return r;
}
#undef _mm_maskz_loadu_epi8
#define _mm_maskz_loadu_epi8(k, p) emu_maskz_loadu_epi8_128(k, p)
static inline __m512i emu_cvttps_epi32(__m512 a)
{
    emu_u u, r;
    memcpy(&u, &a, 64);
    for (int i = 0; i < 16; i++) r.i[i] = (int32_t)u.f[i];
    return r.v;
}
#undef _mm512_cvttps_epi32
#define _mm512_cvttps_epi32(a) emu_cvttps_epi32(a)
static inline void emu_mask_storeu_ps(void *p, uint16_t k, __m512 a)
{
    emu_u u;
    memcpy(&u, &a, 64);
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy((char *)p + 4 * i, &u.f[i], 4);
}
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps(p, k, a) emu_mask_storeu_ps(p, k, a)
static inline void emu_dpbssd(int c, int a, int b)
{
    int M = emu_cfg.rows[c], N = emu_cfg.colsb[c] / 4, K = emu_cfg.colsb[a] / 4;
    if (emu_cfg.rows[a] != M || emu_cfg.rows[b] != K || emu_cfg.colsb[b] != emu_cfg.colsb[c])
        __builtin_trap();
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            int32_t acc;
            memcpy(&acc, &emu_tile[c][m][4 * n], 4);
            for (int k = 0; k < K; k++)
                for (int i = 0; i < 4; i++)
                    acc += (int32_t)(int8_t)emu_tile[a][m][4 * k + i] *
                           (int32_t)(int8_t)emu_tile[b][k][4 * n + i];
            memcpy(&emu_tile[c][m][4 * n], &acc, 4);
        }
}
#undef _tile_dpbssd
#define _tile_dpbssd(c, a, b) emu_dpbssd(c, a, b)
static inline __m256i emu_cvtepi32_epi16_512(__m512i a)
{
    emu_u u;
    memcpy(&u, &a, 64);
    int16_t y[16];
    for (int i = 0; i < 16; i++) y[i] = (int16_t)u.i[i];
    __m256i r;
    memcpy(&r, y, 32);
    return r;
}
#undef _mm512_cvtepi32_epi16
#define _mm512_cvtepi32_epi16(a) emu_cvtepi32_epi16_512(a)
/* aligned 512-bit loads and stores fault on hardware when misaligned: trap here too */
#define EMU_ALIGNED(p) ((((uintptr_t)(p)) & 63) ? (__builtin_trap(), (p)) : (p))
#undef _mm512_load_si512
#undef _mm512_store_si512
#undef _mm512_load_ps
#undef _mm512_store_ps
#define _mm512_load_si512(p) simde_mm512_load_si512(EMU_ALIGNED(p))
#define _mm512_store_si512(p, v) simde_mm512_store_si512(EMU_ALIGNED(p), v)
#define _mm512_load_ps(p) simde_mm512_load_ps(EMU_ALIGNED(p))
#define _mm512_store_ps(p, v) simde_mm512_store_ps(EMU_ALIGNED(p), v)
