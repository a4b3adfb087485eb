/*
 * cpg.h: the Closed Process Group client API of cpg-rs's libcpg.so.4, a
 * drop-in for Corosync's libcpg that talks to cpgd.
 *
 * Written for cpg-rs (MIT OR Apache-2.0). The types, struct layouts,
 * enum values and functions are ABI-identical to Corosync 3's
 * <corosync/cpg.h> (cpg-capi/tests/c/abi.c checks it with
 * _Static_assert), so programs written for Corosync build against this
 * header and run unchanged against either library. Behaviour:
 * docs/spec/cpg-api.md (section 0 lists where we differ from Corosync,
 * always to fix a bug) and cpg-capi/README.md.
 */
#ifndef COROSYNC_CPG_H_DEFINED
#define COROSYNC_CPG_H_DEFINED

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <corosync/corotypes.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A connection to cpgd (random check in the high 32 bits, slot below). */
typedef uint64_t cpg_handle_t;
/* A walk over the group table (cpg_iteration_*). */
typedef uint64_t cpg_iteration_handle_t;

/* Delivery guarantee of a message. */
typedef enum {
	CPG_TYPE_UNORDERED,  /* delivered as AGREED (stronger) */
	CPG_TYPE_FIFO,       /* delivered as AGREED (stronger) */
	CPG_TYPE_AGREED,     /* total order */
	CPG_TYPE_SAFE        /* total order, delivered once every member has it */
} cpg_guarantee_t;

typedef enum {
	CPG_FLOW_CONTROL_DISABLED,  /* sends are accepted */
	CPG_FLOW_CONTROL_ENABLED    /* the node's send queue is full: sends answer TRY_AGAIN */
} cpg_flow_control_state_t;

/* Why a member joined or left (cpg_address.reason). */
typedef enum {
	CPG_REASON_UNDEFINED = 0,
	CPG_REASON_JOIN = 1,
	CPG_REASON_LEAVE = 2,
	CPG_REASON_NODEDOWN = 3,
	CPG_REASON_NODEUP = 4,
	CPG_REASON_PROCDOWN = 5
} cpg_reason_t;

typedef enum {
	CPG_ITERATION_NAME_ONLY = 1,  /* one entry per group, nodeid = pid = 0 */
	CPG_ITERATION_ONE_GROUP = 2,  /* the members of one group */
	CPG_ITERATION_ALL = 3,        /* every (group, nodeid, pid) */
} cpg_iteration_type_t;

typedef enum {
	CPG_MODEL_V1 = 1,
} cpg_model_t;

/* A member: a process on a node. */
struct cpg_address {
	uint32_t nodeid;
	uint32_t pid;
	uint32_t reason;  /* cpg_reason_t in left and joined lists, 0 in member lists */
};

#define CPG_MAX_NAME_LENGTH 128

/*
 * A group name: `length` bytes of `value`, not NUL-terminated. The length
 * counts: "cib" (3) and "cib\0" (4) are two groups.
 */
struct cpg_name {
	uint32_t length;
	char value[CPG_MAX_NAME_LENGTH];
};

#define CPG_MEMBERS_MAX 128

struct cpg_iteration_description_t {
	struct cpg_name group;
	uint32_t nodeid;
	uint32_t pid;
};

/* A ring: its representative (lowest node id) and sequence number. */
struct cpg_ring_id {
	uint32_t nodeid;
	uint64_t seq;
};

/*
 * A message of the group. `msg` is the library's own copy, valid during
 * the call and writable (in-place byte-order fixups are allowed).
 */
typedef void (*cpg_deliver_fn_t)(
	cpg_handle_t handle,
	const struct cpg_name *group_name,
	uint32_t nodeid,
	uint32_t pid,
	void *msg,
	size_t msg_len);

/*
 * A membership change: the members after it (sorted by nodeid, then pid)
 * and who left or joined, with the reason.
 */
typedef void (*cpg_confchg_fn_t)(
	cpg_handle_t handle,
	const struct cpg_name *group_name,
	const struct cpg_address *member_list, size_t member_list_entries,
	const struct cpg_address *left_list, size_t left_list_entries,
	const struct cpg_address *joined_list, size_t joined_list_entries);

/* A ring change: the ring and its nodes. */
typedef void (*cpg_totem_confchg_fn_t)(
	cpg_handle_t handle,
	struct cpg_ring_id ring_id,
	uint32_t member_list_entries,
	const uint32_t *member_list);

typedef struct {
	cpg_deliver_fn_t cpg_deliver_fn;
	cpg_confchg_fn_t cpg_confchg_fn;
} cpg_callbacks_t;

/* What cpg_model_initialize reads first; the model says what follows. */
typedef struct {
	cpg_model_t model;
} cpg_model_data_t;

/* Model v1 flag: a totem confchg right after the own join confchg. */
#define CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF 0x01

typedef struct {
	cpg_model_t model;
	cpg_deliver_fn_t cpg_deliver_fn;
	cpg_confchg_fn_t cpg_confchg_fn;
	cpg_totem_confchg_fn_t cpg_totem_confchg_fn;
	unsigned int flags;
} cpg_model_v1_data_t;

/* Open a handle (model v1, no totem callback, no context). */
cs_error_t cpg_initialize(
	cpg_handle_t *handle,
	cpg_callbacks_t *callbacks);

/* Open a handle with a model (CPG_MODEL_V1), its callbacks and flags. */
cs_error_t cpg_model_initialize(
	cpg_handle_t *handle,
	cpg_model_t model,
	cpg_model_data_t *model_data,
	void *context);

/* Close a handle; a joined handle leaves with reason PROCDOWN. */
cs_error_t cpg_finalize(
	cpg_handle_t handle);

/* The fd to poll for POLLIN: readable while events are pending. */
cs_error_t cpg_fd_get(
	cpg_handle_t handle,
	int *fd);

cs_error_t cpg_max_atomic_msgsize_get(
	cpg_handle_t handle,
	uint32_t *size);

cs_error_t cpg_context_get(
	cpg_handle_t handle,
	void **context);

cs_error_t cpg_context_set(
	cpg_handle_t handle,
	void *context);

/* Run callbacks in this thread. */
cs_error_t cpg_dispatch(
	cpg_handle_t handle,
	cs_dispatch_flags_t dispatch_types);

/* Join a group (one group per handle). */
cs_error_t cpg_join(
	cpg_handle_t handle,
	const struct cpg_name *group);

/* Leave the joined group; afterwards the handle may join again. */
cs_error_t cpg_leave(
	cpg_handle_t handle,
	const struct cpg_name *group);

/* Send the concatenated iovecs to the joined group. */
cs_error_t cpg_mcast_joined(
	cpg_handle_t handle,
	cpg_guarantee_t guarantee,
	const struct iovec *iovec,
	unsigned int iov_len);

/*
 * The members of a group. *member_list_entries is the capacity of
 * member_list on entry and the count on return; a list that does not fit
 * is CS_ERR_NO_SPACE with the count needed, nothing written.
 */
cs_error_t cpg_membership_get(
	cpg_handle_t handle,
	struct cpg_name *groupName,
	struct cpg_address *member_list,
	int *member_list_entries);

cs_error_t cpg_local_get(
	cpg_handle_t handle,
	unsigned int *local_nodeid);

cs_error_t cpg_flow_control_state_get(
	cpg_handle_t handle,
	cpg_flow_control_state_t *flow_control_enabled);

/*
 * A buffer for cpg_zcb_mcast_joined: from 2 KiB up, a slot of the shared
 * region cpgd sends from without copying.
 */
cs_error_t cpg_zcb_alloc(
	cpg_handle_t handle,
	size_t size,
	void **buffer);

cs_error_t cpg_zcb_free(
	cpg_handle_t handle,
	void *buffer);

/*
 * Send the first msg_len bytes of a cpg_zcb_alloc buffer. The buffer stays
 * the caller's, contents unchanged, free to rewrite and send again.
 */
cs_error_t cpg_zcb_mcast_joined(
	cpg_handle_t handle,
	cpg_guarantee_t guarantee,
	void *msg,
	size_t msg_len);

/* A snapshot of the group table, walked with cpg_iteration_next. */
cs_error_t cpg_iteration_initialize(
	cpg_handle_t handle,
	cpg_iteration_type_t iteration_type,
	const struct cpg_name *group,
	cpg_iteration_handle_t *cpg_iteration_handle);

/* The next entry, or CS_ERR_NO_SECTIONS past the end. */
cs_error_t cpg_iteration_next(
	cpg_iteration_handle_t handle,
	struct cpg_iteration_description_t *description);

cs_error_t cpg_iteration_finalize(
	cpg_iteration_handle_t handle);

#ifdef __cplusplus
}
#endif

#endif /* COROSYNC_CPG_H_DEFINED */
