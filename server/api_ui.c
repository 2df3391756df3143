/* api_ui.c - serves the embedded chat page (ui.h).
 *
 * The page is same-origin with the API it calls, so it needs no CORS. Its Content-Security-Policy
 * allows scripts, styles and fetches from the daemon only, no inline script, no plugins, no
 * framing, and only the DOMPurify Trusted Types policy may create HTML: model output that slips
 * through Markdown rendering still cannot run. Assets are revalidated on every load (no-cache +
 * ETag), so a new binary never serves a stale page.
 */
#include "ui.h"

#include "common/err.h"
#include "http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UI_CSP                                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "            \
    "require-trusted-types-for 'script'; trusted-types dompurify"

const struct ui_asset *ui_find(const char *path)
{
    for (size_t i = 0; i < ui_n_assets; i++)
        if (strcmp(ui_assets[i].path, path) == 0) return &ui_assets[i];
    return NULL;
}

/* Accept-Encoding lists gzip with a non-zero q (a missing q is 1). */
static int accepts_gzip(const char *ae)
{
    while (ae && *ae) {
        ae += strspn(ae, " \t,");
        size_t n = strcspn(ae, ",");
        size_t name = strcspn(ae, " \t;,");
        if (name == 4 && strncasecmp(ae, "gzip", 4) == 0) {
            const char *q = strstr(ae, "q=");
            return !q || q > ae + n || strtod(q + 2, NULL) > 0;
        }
        ae += n;
    }
    return 0;
}

enum MHD_Result api_ui(struct http_conn *hc)
{
    if (!hc->srv->cfg->server_ui)
        return http_reply_error(hc, ERR_NOT_FOUND, "the chat page is off (server.ui = false)",
                                NULL);
    const struct ui_asset *a = ui_find(hc->route->path);
    if (!a)
        return http_reply_error(hc, ERR_NOT_FOUND,
                                "this build has no chat page (configured with -Dui=false)", NULL);
    const char *inm = http_header(hc, "If-None-Match");
    int fresh = inm && strstr(inm, a->etag) != NULL;
    int gz = !fresh && a->gz && accepts_gzip(http_header(hc, "Accept-Encoding"));
    const unsigned char *data = gz ? a->gz : a->data;
    size_t len = fresh ? 0 : gz ? a->gz_len : a->len;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", a->content_type);
    MHD_add_response_header(r, "Content-Security-Policy", UI_CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "ETag", a->etag);
    MHD_add_response_header(r, "Vary", "Accept-Encoding");
    if (gz) MHD_add_response_header(r, "Content-Encoding", "gzip");
    http_add_std_headers(hc, r);
    enum MHD_Result ret = MHD_queue_response(hc->conn, fresh ? 304 : 200, r);
    MHD_destroy_response(r);
    hc->responded = 1;
    return ret;
}
