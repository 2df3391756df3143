/* replica.h - what a load balancer and the operator see of one replica among several
 * (docs/scaling.md): the name in the X-Tandem-Replica response header (server.replica_name) and
 * the readiness detail of /health.
 *
 * States, in order: loading (srv->ready is 0), ready, draining (srv->leaving or srv->draining:
 * SIGTERM received; during server.drain_grace_s new requests are still served while /health
 * already answers 503, so an active health check takes the replica out first), and failed (the
 * engine reported a fatal error). Only ready is 200.
 * Threads: replica_init on main before the HTTP front end starts; replica_health on MHD threads
 * (it reads srv's atomics, eng_stats and the request registry, each internally locked).
 */
#ifndef TANDEM_SERVER_REPLICA_H
#define TANDEM_SERVER_REPLICA_H

#include "http.h"

/* Copy server.replica_name into srv->replica after checking it: printable ASCII (no control
 * characters, so it is a safe header value), at most sizeof srv->replica - 1 bytes. 0 or
 * ERR_CONFIG. */
int replica_init(struct srv *s, char *err);

/* The /health body: {"status":"ok"|"unavailable", "state":"loading"|"ready"|"draining"|"failed",
 * "replica"?, "model", and once loaded "in_flight", "running", "waiting", "kv_usage"}.
 * *code is 0 when ready, else ERR_UNAVAILABLE with *why the reason. NULL when out of memory. */
json_t *replica_health(struct srv *s, int *code, const char **why);

#endif
