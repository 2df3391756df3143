/* rows.c - one row of a stored matrix as f32: F32/F16/BF16 directly, FP8 times its 128x128
 * block scale, GGML block types through the CPU kernels' to_float. Used by convert (quantize,
 * dequant) and by the MLA layouts (mla.c). Pure: thread-safe.
 */
#include "weights_internal.h"

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fpconv.h"

#include <string.h>

/* row r of a matrix (type, cols, row_bytes, data, FP8 scale grid) -> out[cols] */
int wt__row_f32(const struct cpuq_ops *ops, int type, int64_t cols, size_t row_bytes,
                const void *data, const float *scale, int64_t r, float *out, const char *name,
                char *err)
{
    const uint8_t *p = (const uint8_t *)data + (size_t)r * row_bytes;
    switch (type) {
    case QTYPE_F32: memcpy(out, p, (size_t)cols * 4); return 0;
    case QTYPE_BF16:
    case QTYPE_F16:
        for (int64_t c = 0; c < cols; c++) {
            uint16_t h;
            memcpy(&h, p + 2 * c, 2);
            out[c] = type == QTYPE_BF16 ? fp_bf16_to_f32(h) : fp_f16_to_f32(h);
        }
        return 0;
    case QTYPE_F8_E4M3: {
        if (!scale) return err_set(err, ERR_FORMAT, "%s: FP8 without scale", name);
        int64_t ncb = (cols + 127) / 128;
        const float *srow = scale + (r / 128) * ncb;
        for (int64_t c = 0; c < cols; c++) {
            float s;
            memcpy(&s, srow + c / 128, 4); /* the mapping may be unaligned */
            out[c] = fp_e4m3_to_f32(p[c]) * s;
        }
        return 0;
    }
    default:
        if (type >= 0 && type < QTYPE_COUNT_ && ops->type[type].to_float) {
            ops->type[type].to_float(p, out, cols);
            return 0;
        }
        return err_set(err, ERR_UNSUPPORTED, "%s: cannot dequantize %s", name, qtype_name(type));
    }
}
