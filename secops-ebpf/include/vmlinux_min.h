/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The few kernel types the programs read, written out by hand instead of a vmlinux.h
 * generated from the build host's kernel. preserve_access_index makes clang emit CO-RE
 * relocations for every field access, so the loader fixes the offsets up against the
 * running kernel's BTF: only the field names must exist there, not these offsets.
 */
#ifndef SECOPS_VMLINUX_MIN_H
#define SECOPS_VMLINUX_MIN_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
};

struct signal_struct {
	atomic_t live; /* threads still running; 0 once the last one is in do_exit */
};

struct task_struct {
	struct mm_struct *mm;
	struct signal_struct *signal;
	int exit_code;
};

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

/* Context of tracepoint sched/sched_process_exec. */
struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	__u32 __data_loc_filename; /* low 16 bits: offset of the string from the context */
	int pid;
	int old_pid;
};

/* Context of every syscalls/sys_enter_* tracepoint: the arguments as unsigned longs. */
struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

#pragma clang attribute pop

#endif /* SECOPS_VMLINUX_MIN_H */
