/* ui.h - the chat page: GET / and its assets (/ui/app.js, /ui/app.css), embedded in the binary.
 *
 * The files of server/ui/ and the npm libraries they use (marked, DOMPurify) are turned into a
 * C table at build time by server/ui/embed.py (ui_assets.c in the build tree); a build
 * configured with -Dui=false has an empty table and answers 404. server.ui = false turns the
 * page off at run time. Every answer carries a strict Content-Security-Policy.
 *
 * Threads: api_ui runs on MHD's pool threads; the asset table is immutable static data.
 * Ownership: responses point into the static table (nothing is allocated per request).
 */
#ifndef TANDEM_SERVER_UI_H
#define TANDEM_SERVER_UI_H

#include <microhttpd.h>
#include <stddef.h>

struct http_conn;

struct ui_asset {
    const char *path;         /* URL path: "/", "/ui/app.js", ... */
    const char *content_type; /* with charset */
    const char *etag;         /* quoted hash of data */
    const unsigned char *data;
    size_t len;
    const unsigned char *gz; /* gzip of data */
    size_t gz_len;
};

extern const struct ui_asset ui_assets[];
extern const size_t ui_n_assets; /* 0 in a build configured with -Dui=false */

/* The asset served at path, or NULL. */
const struct ui_asset *ui_find(const char *path);

/* Route handler for the paths of the asset table (http.c): 200 (gzip when accepted), 304 on a
 * matching If-None-Match, 404 when the page is off or not built. */
enum MHD_Result api_ui(struct http_conn *hc);

#endif
