/* auth.h - API keys: loaded from server.api_key_file, checked in constant time, reloaded on SIGHUP.
 *
 * The file holds one key per line (blank lines and lines starting with '#' are skipped, spaces
 * around a key are trimmed, keys are 1..255 bytes). It must not be readable by "other" users
 * (mode o-r), or loading fails. Keys are never logged. An empty path disables authentication.
 *
 * Threads: auth_create on main; auth_check from any thread (read lock); auth_reload from any
 * thread (main, on SIGHUP), swapping the key set under the write lock. On a reload error the
 * old keys stay in force. Ownership: auth_create allocates; auth_destroy frees (NULL ok).
 */
#ifndef TANDEM_SERVER_AUTH_H
#define TANDEM_SERVER_AUTH_H

#define AUTH_MAX_KEY 255

struct auth;

/* Errors: ERR_IO (unreadable file), ERR_CONFIG (world-readable, no keys, a key too long). */
int auth_create(const char *path, struct auth **out, char *err);
void auth_destroy(struct auth *a);
int auth_reload(struct auth *a, char *err);
int auth_enabled(const struct auth *a); /* 0 when no key file is configured */
int auth_key_count(struct auth *a);

/* 1 when the Authorization header value ("Bearer KEY", may be NULL) carries a valid key, or
 * authentication is disabled; else 0. The time taken does not depend on where the key differs. */
int auth_check(struct auth *a, const char *authorization);
/* The same for a bare key (the x-api-key header; may be NULL): 1 when valid or disabled. */
int auth_check_key(struct auth *a, const char *key);

#endif
