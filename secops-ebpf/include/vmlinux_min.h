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

struct file;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

struct signal_struct {
	atomic_t live; /* threads still running; 0 once the last one is in do_exit */
};

/* The cgroup2 hierarchy, for a task's ancestor cgroups (ancestry.h). */
struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
	int level; /* the hierarchy's root is 0 */
	struct cgroup *ancestors[]; /* from 6.0: every ancestor, itself at [level] */
};

/* Before 6.0 the cgroup kept its ancestors' ids instead of pointers. */
struct cgroup___ancestor_ids {
	int level;
	__u64 ancestor_ids[];
};

struct css_set {
	struct cgroup *dfl_cgrp; /* the task's cgroup on the default (v2) hierarchy */
};

struct task_struct {
	struct css_set *cgroups;
	struct mm_struct *mm;
	struct signal_struct *signal;
	int exit_code;
	int tgid;
};

/* Files, for the LSM programs. Only the fields read are declared. */
struct super_block {
	__u32 s_dev; /* dev_t: major << 20 | minor */
	unsigned long s_magic;
};

struct inode {
	unsigned short i_mode;
	union {
		const unsigned int i_nlink;
		unsigned int __i_nlink;
	};
	unsigned long i_ino;
	struct super_block *i_sb;
};

struct qstr {
	const unsigned char *name;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
	struct super_block *d_sb;
};

struct vfsmount {
	struct dentry *mnt_root;
};

/* fs/mount.h: a vfsmount is embedded in its struct mount. */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_flags;
	unsigned int f_mode; /* fmode_t */
};

struct linux_binprm {
	struct file *file;
};

struct sock {
	unsigned short sk_type;
	unsigned short sk_protocol;
};

struct socket {
	struct sock *sk;
	short type;
};

/* net/unix: the socket file a listening AF_UNIX socket is bound to. */
struct unix_sock {
	struct path path;
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
