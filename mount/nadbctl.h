/*
 * nadbctl's parts (nadbctl.c: arguments, stats, query; nadbctl_tx.c: tx).
 * Each returns the exit status: 0, or 1 after printing why on stderr.
 */
#ifndef NADB_MOUNT_NADBCTL_H
#define NADB_MOUNT_NADBCTL_H

#include <stdbool.h>

/* Sends one command line to MNT/.nadb/ctl; prints an "ok" reply on stdout
 * unless quiet, an error reply on stderr. */
int ctl_command(const char *mnt, const char *cmd, bool quiet);
/* A ctl session of its own (an open descriptor of MNT/.nadb/ctl) for
 * several commands: the descriptor, or -1 after printing why. */
int ctl_session_open(const char *mnt);
/* One command in session fd, printed as ctl_command does. */
int ctl_session_command(int fd, const char *cmd, bool quiet);
/* nadbctl tx ARGS... */
int ctl_tx(const char *mnt, int argc, char **argv);

#endif
