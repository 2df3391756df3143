/* cache_scope.h - the prefix-cache namespace of a request (engine eng_request.cache_salt).
 *
 * The prefix cache would otherwise tell a caller, through cached_tokens and a faster first
 * token, that someone else recently sent the same prompt prefix. Each request therefore gets a
 * 64-bit salt, and the engine shares cached KV blocks only between requests with equal salts:
 *   - engine.prefix_cache_scope = key (default): the salt covers the API key the request was
 *     authenticated with (when server.api_key_file is set), so keys never share blocks;
 *   - global: all keys share (the salt is 0 unless the request gives a cache_salt);
 *   - a request's "cache_salt" string narrows it further (only requests with the same
 *     cache_salt, and under scope=key the same key, share).
 * The salt is SipHash-2-4 of the key and cache_salt under a random per-process secret, so it
 * says nothing about the key and differs from one process to the next; it is never sent out.
 *
 * Threads: any thread (the secret is made once, under pthread_once). Ownership: nothing kept.
 */
#ifndef TANDEM_SERVER_CACHE_SCOPE_H
#define TANDEM_SERVER_CACHE_SCOPE_H

#include <stddef.h>
#include <stdint.h>

#define CACHE_SCOPE_MAX_SALT 256 /* longest cache_salt a request may give (bytes) */

/* The salt for a request: the API key it was authenticated with (key[0..key_len), NULL under
 * scope=global or without authentication; auth_request_key gives it) and its cache_salt (NULL =
 * none). 0 = the shared namespace, returned only when neither is given. */
uint64_t cache_scope_salt(const char *key, size_t key_len, const char *cache_salt,
                          size_t cache_salt_len);

/* SipHash-2-4 of data[0..n) under the 128-bit key k (exposed for tests). */
uint64_t cache_scope_siphash(const uint64_t k[2], const void *data, size_t n);

#endif
