/* dispatch.c - ISA detection, the per-ISA ops tables, and the matmul helpers of cpuq.h.
 *
 * What: cpuid (plus the Linux AMX permission request) runs once and yields a feature mask and
 * the best ISA level. Each ISA's table starts as a copy of the scalar reference and is then
 * overridden by the fill functions of the levels it includes (avx512 = avx2 + avx512 kernels,
 * amx = avx2 + avx512 + amx), so every entry is always callable.
 * Why: like ggml's variant scoring, the choice is made once at start-up, never by #if ladders in
 * shared code; a forced ISA the CPU lacks is refused (ERR_UNSUPPORTED), so it can't run illegal
 * instructions or give wrong output.
 * Threads: detection and table building run under pthread_once; after that the tables are
 * read-only and shared by all threads. The matmul helpers are pure (write only their outputs).
 */
#include "kernels/cpu/cpuq.h"

#include <pthread.h>
#include <strings.h>

#include "common/err.h"
#include "common/log.h"
#include "kernels/cpu/ref/ref.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define CPUQ_X86 1
#else
#define CPUQ_X86 0
#endif

static const char *const isa_names[CPUQ_ISA_COUNT] = {"scalar", "avx2", "avx512", "amx"};

/* Process-wide, written once under pthread_once, then immutable. */
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static unsigned detected_features;
static int detected_isa;

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static struct cpuq_ops tables[CPUQ_ISA_COUNT];

#if CPUQ_X86
/* Ask Linux for permission to use the AMX tile data state (required before the first tile
 * instruction since 5.16). Returns 1 when granted. */
static int amx_request_permission(void)
{
#ifdef SYS_arch_prctl
    const long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
    return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
#else
    return 0;
#endif
}

static unsigned x86_features(void)
{
    unsigned f = 0;
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the YMM/ZMM state (XGETBV) */
    if (__builtin_cpu_supports("avx2")) f |= CPUQ_F_AVX2;
    if (__builtin_cpu_supports("fma")) f |= CPUQ_F_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= CPUQ_F_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= CPUQ_F_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) f |= CPUQ_F_AVX512VL;
    if (__builtin_cpu_supports("avx512dq")) f |= CPUQ_F_AVX512DQ;
    if (__builtin_cpu_supports("avx512vnni")) f |= CPUQ_F_AVX512VNNI;
    if (__builtin_cpu_supports("avx512bf16")) f |= CPUQ_F_AVX512BF16;

    unsigned a, b, c, d;
    /* AVX-VNNI (leaf 7.1 eax bit 4) and AVX512-FP16 (leaf 7.0 edx bit 23) straight from cpuid:
     * clang 14's __builtin_cpu_supports does not know them; the OS state is covered above */
    if ((f & CPUQ_F_AVX2) && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4)))
        f |= CPUQ_F_AVXVNNI;
    if ((f & CPUQ_F_AVX512F) && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 23)))
        f |= CPUQ_F_AVX512FP16;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29))) f |= CPUQ_F_F16C;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        /* leaf 7 edx: bit 22 AMX-BF16, bit 24 AMX-TILE, bit 25 AMX-INT8 */
        int tile = (d >> 24) & 1;
        /* XCR0 bits 17/18 (XTILECFG/XTILEDATA) must be enabled by the OS */
        unsigned xlo = 0, xhi = 0;
        if (tile && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27))) {
            __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
        }
        (void)xhi;
        __get_cpuid_count(7, 0, &a, &b, &c, &d);
        if (tile && (xlo & (3u << 17)) == (3u << 17) && amx_request_permission()) {
            f |= CPUQ_F_AMX_TILE;
            if ((d >> 25) & 1) f |= CPUQ_F_AMX_INT8;
            if ((d >> 22) & 1) f |= CPUQ_F_AMX_BF16;
        }
    }
    return f;
}
#endif

static const unsigned need_avx2 = CPUQ_F_AVX2 | CPUQ_F_FMA | CPUQ_F_F16C;
static const unsigned need_avx512 = CPUQ_F_AVX2 | CPUQ_F_FMA | CPUQ_F_F16C | CPUQ_F_AVX512F |
                                    CPUQ_F_AVX512BW | CPUQ_F_AVX512VL | CPUQ_F_AVX512DQ |
                                    CPUQ_F_AVX512VNNI;
static const unsigned need_amx = CPUQ_F_AVX2 | CPUQ_F_FMA | CPUQ_F_F16C | CPUQ_F_AVX512F |
                                 CPUQ_F_AVX512BW | CPUQ_F_AVX512VL | CPUQ_F_AVX512DQ |
                                 CPUQ_F_AVX512VNNI | CPUQ_F_AMX_TILE | CPUQ_F_AMX_INT8;

static int isa_supported(int isa, unsigned f)
{
    switch (isa) {
    case CPUQ_ISA_SCALAR: return 1;
    case CPUQ_ISA_AVX2: return CPUQ_X86 && (f & need_avx2) == need_avx2;
    case CPUQ_ISA_AVX512: return CPUQ_X86 && (f & need_avx512) == need_avx512;
    case CPUQ_ISA_AMX: return CPUQ_X86 && (f & need_amx) == need_amx;
    default: return 0;
    }
}

static void detect(void)
{
#if CPUQ_X86
    detected_features = x86_features();
#else
    detected_features = 0;
#endif
    detected_isa = CPUQ_ISA_SCALAR;
    for (int i = CPUQ_ISA_COUNT - 1; i > 0; i--)
        if (isa_supported(i, detected_features)) {
            detected_isa = i;
            break;
        }
    LOG_INFO("cpu", "CPU kernels: best ISA %s (features 0x%x%s)", isa_names[detected_isa],
             detected_features,
             (detected_features & CPUQ_F_AMX_TILE) ? ", AMX tile data permitted" : "");
}

unsigned cpuq_cpu_features(void)
{
    pthread_once(&detect_once, detect);
    return detected_features;
}

int cpuq_isa_detect(void)
{
    pthread_once(&detect_once, detect);
    return detected_isa;
}

const char *cpuq_isa_name(int isa)
{
    return (isa >= 0 && isa < CPUQ_ISA_COUNT) ? isa_names[isa] : "?";
}

int cpuq_isa_parse(const char *name)
{
    if (!name) return -1;
    if (strcasecmp(name, "auto") == 0) return cpuq_isa_detect();
    for (int i = 0; i < CPUQ_ISA_COUNT; i++)
        if (strcasecmp(name, isa_names[i]) == 0) return i;
    return -1;
}

static void build_tables(void)
{
    unsigned f = cpuq_cpu_features();
    for (int i = 0; i < CPUQ_ISA_COUNT; i++) {
        struct cpuq_ops *o = &tables[i];
        for (int t = 0; t < QTYPE_COUNT_; t++) o->type[t].vec_dot_type = -1;
        cpuq__fill_scalar(o);
        o->isa = (enum cpuq_isa)i;
        o->isa_name = isa_names[i];
        o->features = f;
        /* only fill the columns this CPU can run; the others stay scalar and are never handed out
         */
        if (!isa_supported(i, f)) continue;
#if CPUQ_X86
        if (i >= CPUQ_ISA_AVX2) cpuq__fill_avx2(o);
        if (i >= CPUQ_ISA_AVX512) cpuq__fill_avx512(o);
        if (i >= CPUQ_ISA_AMX) cpuq__fill_amx(o);
#endif
    }
}

int cpuq_ops_get(int isa, const struct cpuq_ops **out, char *err)
{
    if (isa < 0 || isa >= CPUQ_ISA_COUNT)
        return err_set(err, ERR_INVAL, "cpu.isa: unknown ISA %d", isa);
    unsigned f = cpuq_cpu_features();
    if (!isa_supported(isa, f))
        return err_set(err, ERR_UNSUPPORTED,
                       "cpu.isa = %s: this CPU does not support it (best: %s)", isa_names[isa],
                       isa_names[cpuq_isa_detect()]);
    pthread_once(&tables_once, build_tables);
    *out = &tables[isa];
    LOG_INFO("cpu", "CPU kernels: using %s", isa_names[isa]);
    return 0;
}

int cpuq_ops_select(const char *name, const struct cpuq_ops **out, char *err)
{
    int isa = cpuq_isa_parse(name);
    if (isa < 0)
        return err_set(err, ERR_CONFIG, "cpu.isa = \"%s\": expected auto|amx|avx512|avx2|scalar",
                       name ? name : "(null)");
    return cpuq_ops_get(isa, out, err);
}

/* ---- helpers */

size_t cpuq_row_size(int type, int64_t n) { return qtype_row_bytes(type, n, NULL); }

void cpuq_quantize_rows(const struct cpuq_ops *o, int type, const float *src, void *dst,
                        int64_t nrows, int64_t ncols)
{
    size_t rb = cpuq_row_size(type, ncols);
    for (int64_t r = 0; r < nrows; r++)
        o->type[type].from_float(src + r * ncols, (char *)dst + (size_t)r * rb, ncols);
}

size_t cpuq_act_size(const struct cpuq_ops *o, int type, int64_t cols, int64_t ntok)
{
    if (type < 0 || type >= QTYPE_COUNT_ || !o->type[type].vec_dot || ntok < 0) return 0;
    return cpuq_row_size(o->type[type].vec_dot_type, cols) * (size_t)ntok;
}

void cpuq_quantize_act(const struct cpuq_ops *o, int type, const float *x, int64_t cols,
                       int64_t ntok, void *act)
{
    int vt = o->type[type].vec_dot_type;
    cpuq_quantize_rows(o, vt, x, act, ntok, cols);
}

void cpuq_matmul_rows(const struct cpuq_ops *o, int type, const void *w, size_t w_row_bytes,
                      int64_t r0, int64_t r1, int64_t cols, const void *act, int64_t ntok, float *y,
                      int64_t ldy)
{
    const struct cpuq_type_ops *to = &o->type[type];
    size_t ab = cpuq_row_size(to->vec_dot_type, cols);
    const char *wr = (const char *)w + (size_t)r0 * w_row_bytes;
    if (to->mul_mat) {
        to->mul_mat(cols, wr, w_row_bytes, r1 - r0, act, ab, ntok, y + r0, ldy);
        return;
    }
    for (int64_t r = r0; r < r1; r++, wr += w_row_bytes)
        for (int64_t t = 0; t < ntok; t++)
            to->vec_dot(cols, &y[t * ldy + r], wr, (const char *)act + (size_t)t * ab);
}

int cpuq_matmul(const struct cpuq_ops *o, int type, const void *w, size_t w_row_bytes, int64_t rows,
                int64_t cols, const float *x, int64_t ntok, float *y, void *act_scratch)
{
    if (type < 0 || type >= QTYPE_COUNT_ || !o->type[type].vec_dot) return ERR_UNSUPPORTED;
    if (cpuq_row_size(type, cols) == 0 || cpuq_row_size(o->type[type].vec_dot_type, cols) == 0)
        return ERR_INVAL;
    cpuq_quantize_act(o, type, x, cols, ntok, act_scratch);
    cpuq_matmul_rows(o, type, w, w_row_bytes, 0, rows, cols, act_scratch, ntok, y, rows);
    return 0;
}
