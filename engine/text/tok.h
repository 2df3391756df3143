/* tok.h - byte-level BPE tokenizer (DeepSeek-V3/R1, DeepSeek-LLM/Coder vocabularies).
 *
 * Loaded either from a Hugging Face model directory (tokenizer.json, plus tokenizer_config.json
 * for bos/eos names and the chat template) or from GGUF tokenizer metadata (tokenizer.ggml.*),
 * which the caller has already parsed into a struct tok_vocab (see tok_create_vocab), so this
 * module does not depend on the GGUF reader.
 *
 * Encoding: when TOK_ENC_SPECIAL is set, added/special tokens (e.g. "<｜User｜>") are matched in
 * the text first, honouring their lstrip/rstrip flags as Hugging Face does; the pieces between
 * them (all the text without the flag) are split by the pre-tokenizer regexes (PCRE2, UTF mode,
 * compiled once at load, JIT when available), mapped to ByteLevel symbols and merged by BPE rank.
 * Decoding maps ids to their bytes (ByteLevel decoder); special tokens decode to their content.
 *
 * Fidelity: identical ids to the JavaScript port of HF tokenizers on the differential corpus
 * (tests/text/tok_diff.mjs) and to llama.cpp's DeepSeek-LLM/Coder cases. Known differences
 * from HF's Rust/Oniguruma: `\s` is JavaScript's set (U+FEFF is whitespace, U+0085 is not),
 * and characters assigned after Unicode 14 (PCRE2 10.42's tables) are unassigned here.
 *
 * Invalid UTF-8: tok_encode rejects text that is not valid UTF-8 (overlong forms, surrogates,
 * code points above U+10FFFF and truncated sequences included) with ERR_UTF8 and the byte offset
 * in err; nothing is appended to the output in that case. Embedded NUL bytes are allowed (the
 * length is explicit). tok_decode never fails on a valid id: its output is raw bytes, which may
 * end in (or contain) a partial UTF-8 sequence when ids split a character; use detok.h for
 * streaming.
 *
 * Threads: create/destroy on one thread. After creation a struct tok is read-only; tok_encode,
 * tok_decode and every query may be called from any number of threads at once (per-call state
 * lives on the caller's stack or in the output buffers; PCRE2 match data is per call).
 * Ownership: the caller owns output buffers (struct tok_ids, struct sbuf of common/sbuf.h),
 * which grow with realloc and are reused across calls to avoid heap churn; release them with
 * tok_ids_fini / sbuf_fini.
 */
#ifndef TANDEM_TOK_H
#define TANDEM_TOK_H

#include "common/sbuf.h"

#include <stddef.h>
#include <stdint.h>

struct tok;

/* A growable array of token ids. Zero-initialize ({0}) before first use. */
struct tok_ids {
    int32_t *v;
    size_t n, cap;
};
void tok_ids_fini(struct tok_ids *a);
int tok_ids_push(struct tok_ids *a, int32_t id); /* 0 or ERR_NOMEM */

/* Token types (GGUF tokenizer.ggml.token_type values). */
enum tok_type {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,      /* special tokens: BOS, EOS, <｜User｜>, ... */
    TOK_TYPE_USER_DEFINED = 4, /* added tokens that are not special */
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* Everything needed to build a tokenizer from GGUF metadata. All pointers are borrowed for the
 * duration of tok_create_vocab only (it copies what it keeps). */
struct tok_vocab {
    const char *model; /* tokenizer.ggml.model: "gpt2" (byte-level BPE), or "tiktoken" (tokens
                          are raw bytes, merges are merge_ids; tok_tiktoken.c) */
    const char *pre;   /* tokenizer.ggml.pre: "deepseek-llm", "deepseek-coder", "kimi-k2",
                          "deepseek-v3" (NULL or "default": GPT-2 regex) */
    size_t n_tokens;
    const char *const *tokens;  /* [n_tokens] ByteLevel-encoded pieces (as in tokenizer.json) */
    const size_t *token_lens;   /* [n_tokens] byte lengths, or NULL = NUL-terminated strings */
    const int32_t *token_types; /* [n_tokens] enum tok_type, or NULL = all NORMAL */
    size_t n_merges;
    const char *const *merges; /* [n_merges] "left right", rank = index */
    const size_t *merge_lens;  /* [n_merges] byte lengths, or NULL = NUL-terminated */
    int32_t bos_id;            /* -1 = none */
    int32_t eos_id;            /* -1 = none */
    int add_bos;               /* tokenizer.ggml.add_bos_token (informational) */
    const char *chat_template; /* tokenizer.chat_template, or NULL */
    const int32_t *merge_ids;  /* "tiktoken": [n_merges][3] left id, right id, rank */
};

/* Load tokenizer.json and (optionally) tokenizer_config.json from directory `dir`.
 * Errors: ERR_IO (missing/unreadable file), ERR_FORMAT (malformed JSON or unexpected structure,
 * with the field named in err), ERR_UNSUPPORTED (a model/pre-tokenizer/normalizer type other than
 * byte-level BPE with Split/Digits/ByteLevel pre-tokenizers), ERR_NOMEM. */
int tok_create_dir(struct tok **out, const char *dir, char *err);

/* Build from already-parsed GGUF metadata. Errors as tok_create_dir. */
int tok_create_vocab(struct tok **out, const struct tok_vocab *v, char *err);

/* Build from the tokenizer.ggml.* keys of an open GGUF file (tokenizer.ggml.model, .tokens,
 * .merges, .token_type, .pre, .bos_token_id, .eos_token_id, .add_bos_token and
 * tokenizer.chat_template). Pre "kimi-k2" (llama.cpp's conversion of Kimi's tiktoken ranks):
 * Kimi's pattern, and a piece that is a token is that token, as tiktoken encodes.
 * The context is only read during the call. Errors: ERR_FORMAT
 * (a key missing or of the wrong type, named in err), ERR_UNSUPPORTED, ERR_NOMEM. */
struct gguf_ctx;
int tok_create_gguf(struct tok **out, const struct gguf_ctx *g, char *err);

/* A tiktoken-style BPE directory (Kimi-K2, Moonlight): tiktoken.model (one "BASE64 RANK" line
 * per token, rank = id) plus tokenizer_config.json (added_tokens_decoder, bos/eos, chat_template);
 * the special tokens fill ids from the last rank + 1 on, 256 of them, unnamed ones as
 * "<|reserved_token_ID|>" (tokenization_kimi.py); Kimi's pre-tokenizer pattern. Encoding is
 * tiktoken's: a piece that is a token is that token, else byte pairs merge lowest rank of their
 * concatenation first, leftmost on ties. Errors: ERR_IO, ERR_FORMAT (file and line), ERR_NOMEM. */
int tok_create_tiktoken(struct tok **out, const char *dir, char *err);

/* llama.cpp's GGUF form of a tiktoken.model directory (convert_hf_to_gguf.py's conversion of
 * Kimi-K2 / Moonlight) into w: tokenizer.ggml.model "gpt2", .pre "kimi-k2", .tokens (the ranks
 * as GPT-2 byte-to-unicode strings, the 256 special ids by name, "[PADID]" for the ids from the
 * tokenizer's size up to n_vocab - 1), .token_type (NORMAL; CONTROL for every special id; UNUSED
 * for the padding), .merges (one per base token of two or more bytes, in rank order: tiktoken's
 * BPE replayed on its bytes with the lower ranks, when that ends in two parts; a token no pair
 * of tokens builds has none) and, from tokenizer_config.json, tokenizer.chat_template and
 * tokenizer.ggml.add_bos_token. The bos/eos ids are left to the caller (the model's config).
 * n_vocab: the model's vocabulary (0: the tokenizer's size). tok_create_gguf reads the result
 * back as the directory encodes. Errors: those of tok_create_tiktoken, ERR_INVAL (n_vocab below
 * the tokenizer's size), ERR_NOMEM. */
struct gguf_writer;
int tok_tiktoken_to_gguf(struct gguf_writer *w, const char *dir, int n_vocab, char *err);

/* GPT-2's byte-to-unicode alphabet (ByteLevel): s[0..n) as UTF-8 into out (room for 2n + 1
 * bytes), NUL-terminated; returns the length. */
size_t tok_bytelevel_encode(const char *s, size_t n, char *out);

/* Load the tokenizer of a model path: a directory with tokenizer.json (preferred), else
 * tiktoken.model, else the GGUF file in the directory (the first part of a split set), or a
 * .gguf file itself.
 * Errors: ERR_CONFIG (empty path), ERR_IO, and those of the loaders above. */
int tok_load(struct tok **out, const char *path, char *err);

void tok_destroy(struct tok *t); /* accepts NULL */

/* Encoding flags. */
#define TOK_ENC_SPECIAL                                                                            \
    1u                 /* match added tokens (special or not) in the text, as HF does;             \
                          templates need this. Without it the whole text is plain text:            \
                          "<｜User｜>" typed by a user becomes ordinary BPE tokens. */
#define TOK_ENC_BOS 2u /* prepend the BOS id (when the vocabulary has one) */
#define TOK_ENC_MARKED                                                                             \
    4u /* the text holds tok_mark_plain output: markers are dropped (a doubled one is one          \
          literal U+FDD0) after added tokens are matched, so marked spans stay plain text */

/* Append the ids of text[0..len) to out. Returns 0, ERR_UTF8 (invalid UTF-8; err says where;
 * out unchanged), ERR_NOMEM. */
int tok_encode(const struct tok *t, const char *text, size_t len, unsigned flags,
               struct tok_ids *out, char *err);

/* Plain-text marking, for text inside a larger one that is encoded with TOK_ENC_SPECIAL (chat
 * message content inside a rendered template). Appends s[0..n) to out with the marker U+FDD0
 * (a Unicode noncharacter) written after the first character of every place where an added
 * token starts, or where the text ends inside one, so that no added token can be matched there;
 * a U+FDD0 already in the text is written twice. Encoding the whole text with TOK_ENC_SPECIAL |
 * TOK_ENC_MARKED then gives the marked spans exactly the ids of the same text without special
 * matching, whatever a template did around them (copying, concatenating, splitting: the marker
 * travels inside the span). Content cannot forge a marker (its own are doubled) and cannot
 * remove one. With keep_think, "<think>" and "</think>" are left unmarked: assistant history,
 * where templates look for them to cut the reasoning out. Limits: an added token of a single
 * character cannot be split (DeepSeek-V3's vocabulary has none; DeepSeek-V2's has 13 non-special
 * ones, "ø", "ö", "ü", ..., the byte-level names of the bytes UTF-8 never uses: such a character
 * in marked text becomes that token, as HF's tokenizer makes it in any text). Returns 0 or
 * ERR_NOMEM (out unchanged); out is NUL-terminated on success. */
#define TOK_PLAIN_MARK "\xEF\xB7\x90" /* U+FDD0 */
int tok_mark_plain(const struct tok *t, const char *s, size_t n, int keep_think, struct sbuf *out);

/* Decoding flags. */
#define TOK_DEC_SKIP_SPECIAL 1u /* leave out special (control) tokens */

/* Append the bytes of ids[0..n) to out. Returns 0, ERR_INVAL (an id out of range; err names it;
 * out unchanged), ERR_NOMEM. */
int tok_decode(const struct tok *t, const int32_t *ids, size_t n, unsigned flags, struct sbuf *out,
               char *err);

/* The decoded bytes of one token (ByteLevel symbols mapped back to bytes; special tokens give
 * their content). Returns a pointer into the tokenizer (valid until tok_destroy, not
 * NUL-terminated) and sets *len; NULL for an id out of range. Used by the detokenizer and by
 * constrained decoding to see every token's bytes. */
const char *tok_piece(const struct tok *t, int32_t id, size_t *len);

int tok_vocab_size(const struct tok *t); /* number of ids (max id + 1) */
/* ids in use: tok_vocab_size without the trailing UNUSED ids (a GGUF's "[PADID]" padding up to
 * the model's vocabulary), so a directory and its GGUF form give the same count */
int tok_n_used(const struct tok *t);
int32_t tok_bos(const struct tok *t); /* BOS id or -1 */
int32_t tok_eos(const struct tok *t); /* EOS id or -1 */
/* Id of the token whose content is exactly `text` (e.g. "<｜tool▁calls▁begin｜>"), or -1. */
int32_t tok_find(const struct tok *t, const char *text);
int tok_is_special(const struct tok *t, int32_t id); /* 1 for special/control tokens, else 0 */
/* 1 for every added token (special or not, e.g. "<｜User｜>", "<｜tool▁sep｜>"), else 0. */
int tok_is_added(const struct tok *t, int32_t id);
/* tokenizer_config.json add_bos_token / tokenizer.ggml.add_bos_token (informational: the
 * DeepSeek chat templates write BOS themselves). */
int tok_add_bos(const struct tok *t);
/* The chat_template string from tokenizer_config.json / GGUF, or NULL when there is none.
 * Valid until tok_destroy. */
const char *tok_chat_template(const struct tok *t);
/* The BOS/EOS token text ("<｜begin▁of▁sentence｜>"), or "" when there is none. */
const char *tok_bos_text(const struct tok *t);
const char *tok_eos_text(const struct tok *t);

#endif
