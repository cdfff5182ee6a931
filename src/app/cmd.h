/*
 * cmd.h -- the subcommands of the `nudge` binary.
 *
 * Design: main() only dispatches; each subcommand lives in its own cmd_<name>.c
 * and returns the process exit status. Subcommands parse their own flags.
 */
#ifndef NUDGE_APP_CMD_H
#define NUDGE_APP_CMD_H

int cmd_serve(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_expr(int argc, char **argv);
int cmd_render(int argc, char **argv);
int cmd_journey(int argc, char **argv);
int cmd_sink(int argc, char **argv);
int cmd_apply(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif
