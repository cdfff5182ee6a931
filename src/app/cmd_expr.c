/*
 * cmd_expr.c -- placeholder until the module behind `nudge expr` lands.
 */
#include <stdio.h>

#include "app/cmd.h"

int cmd_expr(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "nudge expr: not built yet\n");
	return 1;
}
