/* served.h - the model names this server answers to (option model.served_names).
 *
 * The list is the option's comma-separated names (spaces around each trimmed), or, when the
 * option is empty, the one name the server reports (model.name or the directory name). A request
 * whose "model" is not in the list is a 404 model_not_found; an absent "model" is accepted.
 * Threads: pure functions over the immutable config strings; any thread.
 */
#ifndef TANDEM_SERVED_H
#define TANDEM_SERVED_H

#define SERVED_MAX_NAMES 32
#define SERVED_MAX_NAME_LEN 127

/* Check a model.served_names value at start-up: every name non-empty, at most
 * SERVED_MAX_NAME_LEN bytes, at most SERVED_MAX_NAMES names. 0 or ERR_CONFIG (err says why). */
int served_check(const char *list, char *err);

/* 1 when `name` is served: one of the names in `list`, or equal to `fallback` when list is
 * empty; else 0. */
int served_has(const char *list, const char *fallback, const char *name);

/* The i-th served name into buf (SERVED_MAX_NAME_LEN + 1 bytes). Returns 1, or 0 past the end. */
int served_name(const char *list, const char *fallback, int i, char *buf);

#endif
