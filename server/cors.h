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

/* 1 when `origin` (the request's Origin header, may be NULL) is in `list`, else 0. */
int cors_allowed(const char *list, const char *origin);

#endif
