/*
 * tmpl.h -- the Liquid template language: compile once, render many times.
 *
 * Design: every message nudge sends is a Liquid template (DESIGN.md §9,
 * docs/templates.md). tmpl_compile parses source text into an immutable compiled
 * template (one allocation arena owned by the template); tmpl_render walks it
 * against a json-c context and appends the output to a caller's buffer, taking
 * every temporary from the caller's scratch arena. A compiled template is never
 * written after compile, so any number of threads may render it at once, each
 * with its own arena and buffer. Snippets for {% include %} / {% render %} come
 * from a callback at render time; they are compiled per render and freed before
 * tmpl_render returns.
 * Invariants: (1) rendering never modifies the context JSON; (2) every limit in
 *   struct tmpl_limits that is exceeded ends the render with NERR_LIMIT, never a
 *   crash or a hang; (3) error messages start with "LINE:COLUMN: ".
 */
#ifndef NUDGE_TMPL_TMPL_H
#define NUDGE_TMPL_TMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"

struct json_object;
struct tmpl;

/* Zero in any field means the default shown. */
struct tmpl_limits {
	size_t template_bytes;	/* compile: source size (1 MiB) */
	size_t nesting_depth;	/* compile: nested blocks / brackets (64) */
	size_t output_bytes;	/* render: bytes appended to out (4 MiB) */
	size_t loop_iterations; /* render: total for/tablerow/cycle steps (100000) */
	size_t include_depth;	/* render: nested include/render (10) */
	size_t scratch_bytes;	/* render: scratch arena growth (64 MiB) */
	size_t work_units;	/* render: filter bytes + 10 per tag/output run (100M) */
};

struct tmpl_options {
	bool strict;	  /* unknown filters and filter keywords are compile errors */
	bool html_escape; /* {{ }} output is HTML-escaped unless it ends in | raw */
	struct tmpl_limits limits;
};

/*
 * Looks up the snippet `name` for include/render and appends its source to src.
 * Returns NERR_OK, NERR_NOTFOUND, or another error that ends the render.
 */
typedef enum nerr (*tmpl_partial_fn)(void *userdata, const char *name, struct buf *src);

struct tmpl_render_options {
	tmpl_partial_fn partial; /* NULL: include/render fail with "not found" */
	void *partial_userdata;
	struct tmpl_limits limits;
	int64_t now_ms; /* what the date filter calls "now"; 0 = the wall clock */
};

/*
 * Compiles src (len bytes, need not be NUL-terminated). opt may be NULL (lax,
 * no escaping, default limits). On success *out owns the compiled template; on
 * failure returns NERR_PARSE (or NERR_TOOBIG) with "LINE:COL: reason" in msg.
 */
enum nerr tmpl_compile(const char *src, size_t len, const struct tmpl_options *opt,
		       struct tmpl **out, struct nerr_msg *msg);

/*
 * Renders t with ctx (an object, or NULL) as the global variables and appends the
 * output to out. ro may be NULL. Temporary memory comes from scratch, which the
 * caller resets. On error returns NERR_EVAL / NERR_LIMIT / NERR_NOTFOUND with the
 * position in msg; out may then hold partial output.
 */
enum nerr tmpl_render(const struct tmpl *t, struct json_object *ctx,
		      const struct tmpl_render_options *ro, struct arena *scratch,
		      struct buf *out, struct nerr_msg *msg);

void tmpl_free(struct tmpl *t);

#endif
