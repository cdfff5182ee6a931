/*
 * fuzz_journey_def.c -- arbitrary bytes through journey_def_compile().
 *
 * Design: besides crashes, leaks and UB (ASan/UBSan/LSan), it checks def.c's
 * invariants: (1) a compiled definition has every step index in range and every
 * required program/template present; (2) no cycle lacks a wait (checked by a
 * second, independent search here); (3) every step is reachable from start;
 * (4) errors are capped; a refused document yields no definition and at least
 * one error; each entry kind carries exactly its own fields. The template callback
 * accepts ids of even length, so both outcomes of that check are reached. Seeds:
 * tests/fuzz/corpus/fuzz_journey_def (the examples).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr/expr.h"
#include "journey/def.h"

static struct expr_env *env;

static void must(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static bool even_templates(void *ud, const char *id, const char *channel)
{
	(void)ud;
	(void)channel;
	return strlen(id) % 2 == 0;
}

static void check_ref(const struct journey_def *d, int i, bool required)
{
	must(i >= -1 && i < (int)d->nsteps, "index in range");
	must(!required || i >= 0, "required reference set");
}

static unsigned succ(const struct journey_step *s, int *out)
{
	unsigned n = 0;

	if (s->kind == JOURNEY_STEP_BRANCH)
		for (unsigned i = 0; i < s->u.branch.narms; i++)
			out[n++] = s->u.branch.arms[i].next;
	if (s->kind == JOURNEY_STEP_SPLIT)
		for (unsigned i = 0; i < s->u.split.narms; i++)
			out[n++] = s->u.split.arms[i].next;
	out[n++] = s->next;
	out[n++] = s->else_next;
	out[n++] = s->on_event;
	out[n++] = s->on_timeout;
	out[n++] = s->on_failure;
	return n;
}

static bool is_wait(const struct journey_step *s)
{
	return s->kind == JOURNEY_STEP_WAIT || s->kind == JOURNEY_STEP_WAIT_FOR;
}

/* Invariant (2): from every non-wait step, a walk over non-wait steps never
 * comes back to it (bounded: nsteps hops). */
static void check_no_waitless_cycle(const struct journey_def *d)
{
	unsigned n = d->nsteps;
	unsigned char *seen = calloc(n, 1);
	unsigned *queue = malloc(n * sizeof(*queue));
	int s[JOURNEY_MAX_ARMS + 5];

	for (unsigned root = 0; root < n; root++) {
		unsigned head = 0, tail = 0;

		if (is_wait(&d->steps[root]))
			continue;
		memset(seen, 0, n);
		queue[tail++] = root;
		while (head < tail) {
			unsigned u = queue[head++], k = succ(&d->steps[u], s);

			for (unsigned i = 0; i < k; i++) {
				if (s[i] < 0 || is_wait(&d->steps[s[i]]))
					continue;
				must((unsigned)s[i] != root, "no cycle without a wait");
				if (!seen[s[i]]) {
					seen[s[i]] = 1;
					queue[tail++] = (unsigned)s[i];
				}
			}
		}
	}
	free(queue);
	free(seen);
}

/* Each entry kind has exactly its own fields. */
static void check_entry(const struct journey_entry *e)
{
	switch (e->kind) {
	case JOURNEY_ENTRY_EVENT:
		must(e->event && !e->audience && !e->on_exit && !e->who.prog,
		     "event entry");
		break;
	case JOURNEY_ENTRY_AUDIENCE:
		must(!e->event && e->audience && !e->who.prog, "audience entry");
		break;
	case JOURNEY_ENTRY_BUSINESS:
		must(e->event && !e->audience && !e->on_exit && e->who.prog,
		     "business entry");
		break;
	default:
		must(0, "entry kind");
	}
	must((e->index_trait != NULL) == (e->index_value != NULL) &&
		     (!e->index_trait || e->kind == JOURNEY_ENTRY_BUSINESS),
	     "index fields only on a business entry, both or neither");
}

static void check_def(const struct journey_def *d)
{
	unsigned n = d->nsteps, top = 0, nev;
	const char *const *ev;
	unsigned char *seen = calloc(n, 1);
	unsigned *stack = malloc(n * sizeof(*stack));
	int s[JOURNEY_MAX_ARMS + 5];

	must(d->id && n > 0 && d->start < n, "journey fields");
	check_entry(&d->entry);
	for (unsigned i = 0; i < n; i++) {
		const struct journey_step *st = &d->steps[i];

		must(journey_def_step_index(d, st->id) == (int)i, "step index lookup");
		check_ref(d, st->next,
			  st->kind == JOURNEY_STEP_WAIT ||
				  st->kind == JOURNEY_STEP_MESSAGE ||
				  st->kind == JOURNEY_STEP_WEBHOOK ||
				  st->kind == JOURNEY_STEP_UPDATE_PROFILE);
		check_ref(d, st->else_next, st->kind == JOURNEY_STEP_BRANCH);
		check_ref(d, st->on_event, st->kind == JOURNEY_STEP_WAIT_FOR);
		check_ref(d, st->on_timeout, st->kind == JOURNEY_STEP_WAIT_FOR);
		check_ref(d, st->on_failure, false);
		switch (st->kind) {
		case JOURNEY_STEP_BRANCH:
			must(st->u.branch.narms > 0, "branch arms");
			for (unsigned k = 0; k < st->u.branch.narms; k++) {
				must(st->u.branch.arms[k].when.prog != NULL,
				     "branch program");
				check_ref(d, st->u.branch.arms[k].next, true);
			}
			break;
		case JOURNEY_STEP_SPLIT:
			for (unsigned k = 0; k < st->u.split.narms; k++) {
				must(st->u.split.arms[k].weight > 0, "split weight");
				check_ref(d, st->u.split.arms[k].next, true);
			}
			break;
		case JOURNEY_STEP_WAIT:
			must(st->u.wait.mode != JOURNEY_WAIT_UNTIL ||
				     st->u.wait.until.prog,
			     "until program");
			must(st->u.wait.mode != JOURNEY_WAIT_DURATION ||
				     st->u.wait.duration_ms > 0,
			     "wait duration");
			break;
		case JOURNEY_STEP_WAIT_FOR:
			must(st->u.wait_for.timeout_ms > 0, "timeout");
			if (st->u.wait_for.mode == JOURNEY_WAIT_FOR_ENGAGEMENT)
				must(st->u.wait_for.message_step >= 0 &&
					     d->steps[st->u.wait_for.message_step].kind ==
						     JOURNEY_STEP_MESSAGE,
				     "engagement names a message step");
			else
				must(st->u.wait_for.event != NULL, "wait_for event");
			break;
		case JOURNEY_STEP_WEBHOOK:
			must(st->u.webhook.url != NULL, "webhook url");
			must((st->u.webhook.body != NULL) !=
				     (st->u.webhook.template_id != NULL),
			     "webhook body xor template");
			break;
		case JOURNEY_STEP_MESSAGE:
			must(st->u.message.template_id && st->u.message.category,
			     "message");
			break;
		case JOURNEY_STEP_UPDATE_PROFILE:
			must(st->u.update_profile.nset + st->u.update_profile.nunset > 0,
			     "update_profile traits");
			break;
		case JOURNEY_STEP_JUMP:
			must(st->u.jump.journey_id != NULL, "jump target");
			break;
		default:
			break;
		}
	}
	/* (3) reachability */
	seen[d->start] = 1;
	stack[top++] = d->start;
	while (top) {
		unsigned u = stack[--top], k = succ(&d->steps[u], s);

		for (unsigned i = 0; i < k; i++) {
			if (s[i] >= 0 && !seen[s[i]]) {
				seen[s[i]] = 1;
				stack[top++] = (unsigned)s[i];
			}
		}
	}
	for (unsigned i = 0; i < n; i++)
		must(seen[i], "every step reachable");
	check_no_waitless_cycle(d);
	ev = journey_def_events(d, &nev);
	must((d->entry.kind == JOURNEY_ENTRY_EVENT) ==
		     (nev >= 1 && strcmp(ev[0], d->entry.event) == 0),
	     "the entry event is listed first, and only for an event entry");
	free(stack);
	free(seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct journey_errors errs = {0};
	struct journey_def *d = NULL;
	struct journey_limits lim;
	enum nerr rc;

	if (!env)
		env = journey_env_new();
	journey_limits_default(&lim);
	lim.max_def_bytes = 64 * 1024;
	rc = journey_def_compile((const char *)data, size, &lim, env, even_templates,
				 NULL, &d, &errs);
	if (rc == NERR_OK) {
		must(d != NULL && errs.n == 0, "ok has a definition and no errors");
		check_def(d);
	} else {
		must(d == NULL, "no definition on error");
		must(errs.n > 0 && errs.n <= JOURNEY_MAX_ERRORS + 1,
		     "errors reported, capped");
	}
	journey_def_free(d);
	journey_errors_fini(&errs);
	return 0;
}
