/* fuzz_jsonschema.c - libFuzzer target: the JSON-schema compiler (engine/text/jsonschema.h).
 *
 * Byte 0: bit 0 = JSONSCHEMA_LENIENT, bit 1 = treat the JSON as a whole request body and go
 * through jsonschema_response_format, else compile it as a schema. The rest is JSON text.
 * Properties: 0 with a grammar within JSONSCHEMA_MAX_NODES, or ERR_INVAL with a message.
 */
#include "fuzz_common.h"
#include "engine/text/jsonschema.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    json_error_t je;
    json_t *root = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, &je);
    if (!root) return 0;
    struct jsonschema_grammar *g = NULL;
    char err[ERR_LEN] = "";
    const char *param = NULL;
    int rc = (data[0] & 2)
                 ? jsonschema_response_format(root, &g, &param, err)
                 : jsonschema_compile(root, data[0] & 1 ? JSONSCHEMA_LENIENT : 0, &g, err);
    if (rc != 0 && (rc != ERR_INVAL || !err[0])) abort();
    if (rc == 0 && g && g->n_nodes > JSONSCHEMA_MAX_NODES) abort();
    jsonschema_unref(g);
    json_decref(root);
    return 0;
}
