/*
 * cmd_serve.c -- placeholder until the module behind `nudge serve` lands.
 */
#include <stdio.h>

#include "app/cmd.h"

int cmd_serve(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "nudge serve: not built yet\n");
	return 1;
}
