/* cors.h - which browser origins may call the API (options server.cors_origins, server.cors).
 *
 * The list is comma-separated origins ("scheme://host[:port]", spaces around each trimmed,
 * compared without regard to ASCII case) or "*" for any origin. The deprecated server.cors=true
 * means "*" when server.cors_origins is empty.
 * Threads: pure functions over the immutable config strings; any thread.
 */
#ifndef TANDEM_SERVER_CORS_H
#define TANDEM_SERVER_CORS_H

#include "config/cfg.h"

/* The effective origin list of c ("" when browsers get no CORS headers). */
const char *cors_origin_list(const struct cfg *c);

/* Start-up check of server.cors_origins: each entry is "*" or scheme://host[:port] (no path, no
 * empty entry). 0, or ERR_CONFIG with a message naming the entry. */
int cors_check(const char *list, char *err);

/* The Access-Control-Allow-Origin value for a request's Origin header (may be NULL): `origin`
 * itself when it is in `list`, "*" when only the wildcard matches, NULL when not allowed. */
const char *cors_allow_origin(const char *list, const char *origin);

/* 1 when an Access-Control-Request-Headers value may be echoed back as it is: at most 512
 * bytes of header-name characters, commas and spaces. */
int cors_headers_echoable(const char *value);

#endif
