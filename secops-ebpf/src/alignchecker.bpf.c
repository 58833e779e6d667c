// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Never loaded. One global of every shared type, so that this object's BTF describes each
 * of them (and every enumerator); tests/layout.rs reads that BTF and compares it with
 * secops-common's kernel module, size by size and offset by offset.
 */
#include "secops.h"

struct secops_config secops_check_config;
struct secops_agent secops_check_agent;
struct secops_ancestor_key secops_check_ancestor_key;
struct secops_port_range secops_check_port_range;
struct secops_egress4_key secops_check_egress4_key;
struct secops_egress6_key secops_check_egress6_key;
struct secops_egress_value secops_check_egress_value;
struct secops_egress_allowed_key secops_check_egress_allowed_key;
struct secops_egress_allowed_value secops_check_egress_allowed_value;
struct secops_dns_origin secops_check_dns_origin;
struct secops_name_key secops_check_name_key;
struct secops_name_value secops_check_name_value;
struct secops_event_header secops_check_event_header;
struct secops_exec_body secops_check_exec_body;
struct secops_exit_body secops_check_exit_body;
struct secops_unlink_body secops_check_unlink_body;
struct secops_rename_body secops_check_rename_body;
struct secops_net_body secops_check_net_body;
struct secops_inode_key secops_check_inode_key;
struct secops_inode_rule secops_check_inode_rule;
struct secops_lsm_body secops_check_lsm_body;
struct secops_grant_key secops_check_grant_key;
struct secops_grant secops_check_grant;
struct secops_decision_key secops_check_decision_key;
struct secops_grant_body secops_check_grant_body;
union secops_event_body secops_check_event_body;
struct secops_event secops_check_event;

enum secops_limits secops_check_limits;
enum secops_event_kind secops_check_event_kind;
enum secops_verdict secops_check_verdict;
enum secops_agent_flags secops_check_agent_flags;
enum secops_autonomy secops_check_autonomy;
enum secops_proto_bits secops_check_proto_bits;
enum secops_net_numbers secops_check_net_numbers;
enum secops_net_kind secops_check_net_kind;
enum secops_net_reason secops_check_net_reason;
enum secops_fs_op secops_check_fs_op;
enum secops_rule_verdict secops_check_rule_verdict;
enum secops_lsm_op secops_check_lsm_op;
enum secops_grant_kind secops_check_grant_kind;
enum secops_grant_flags secops_check_grant_flags;
