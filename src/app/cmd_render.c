/*
 * cmd_render.c -- placeholder until the module behind `nudge render` lands.
 */
#include <stdio.h>

#include "app/cmd.h"

int cmd_render(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "nudge render: not built yet\n");
	return 1;
}
