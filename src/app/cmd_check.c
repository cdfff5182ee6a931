/*
 * cmd_check.c -- placeholder until the module behind `nudge check` lands.
 */
#include <stdio.h>

#include "app/cmd.h"

int cmd_check(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "nudge check: not built yet\n");
	return 1;
}
