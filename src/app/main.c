/*
 * main.c -- the `nudge` binary: dispatch to a subcommand.
 *
 * Design: one binary for every role (server, offline checks, the expression and
 * template previews) so that what an operator tests from the shell is exactly
 * what the server runs. argv[1] picks the subcommand; the subcommand receives
 * argv shifted by one (its own name in argv[0]).
 */
#include <stdio.h>
#include <string.h>

#include "app/cmd.h"

#ifndef NUDGE_VERSION
#define NUDGE_VERSION "0.1.0"
#endif

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("nudge %s\n", NUDGE_VERSION);
	return 0;
}

static int cmd_help(int argc, char **argv);

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} commands[] = {
	{"serve", cmd_serve, "run the server (--config FILE, --listen, --data-dir, ...)"},
	{"check", cmd_check, "verify a data directory offline (--data-dir DIR)"},
	{"expr", cmd_expr, "evaluate a CEL expression ([--vars FILE|-] EXPR)"},
	{"render", cmd_render,
	 "render a Liquid template (FILE [--data FILE|-] [--partials DIR] [--html] "
	 "[--strict])"},
	{"journey", cmd_journey,
	 "check a journey document (validate FILE [--templates DIR])"},
	{"sink", cmd_sink,
	 "print the webhooks it receives (--http PORT [--fail-first N] [--status CODE])"},
	{"apply", cmd_apply,
	 "upload and publish a folder of journeys and templates (DIR [--url URL] "
	 "[--admin-key KEY] [--no-publish] [--dry-run])"},
	{"report", cmd_report,
	 "print a journey's funnel or the overview from a running server (journey ID | "
	 "overview [--url URL] [--admin-key KEY] [--version N] [--csv|--json])"},
	{"version", cmd_version, "print the version"},
	{"help", cmd_help, "this text"},
};

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("usage: nudge COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		printf("  %-8s %s\n", commands[i].name, commands[i].help);
	printf("\nSee README.md and docs/ for details.\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		cmd_help(argc, argv);
		return 2;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return cmd_help(argc - 1, argv + 1);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "nudge: unknown command '%s' (try 'nudge help')\n", argv[1]);
	return 2;
}
