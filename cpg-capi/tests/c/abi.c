/*
 * The ABI of <corosync/cpg.h> and <corosync/corotypes.h>, pinned: this
 * file compiles against cpg-capi/include and against Corosync's own
 * headers, and asserts the same sizes, offsets and values for both (those
 * of Corosync 3 on LP64, docs/spec/cpg-api.md §2-§3). It also prints them,
 * so the test compares the two builds' output line for line.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <corosync/cpg.h>

#define PIN(expr, value) _Static_assert((expr) == (value), #expr " == " #value)
#define SHOW(expr) printf("%s = %lld\n", #expr, (long long)(expr))

PIN(sizeof(cpg_handle_t), 8);
PIN(sizeof(cpg_iteration_handle_t), 8);
PIN(sizeof(cs_error_t), 4);
PIN(sizeof(cs_dispatch_flags_t), 4);
PIN(sizeof(cpg_guarantee_t), 4);
PIN(sizeof(struct cpg_name), 132);
PIN(offsetof(struct cpg_name, length), 0);
PIN(offsetof(struct cpg_name, value), 4);
PIN(sizeof(struct cpg_address), 12);
PIN(offsetof(struct cpg_address, nodeid), 0);
PIN(offsetof(struct cpg_address, pid), 4);
PIN(offsetof(struct cpg_address, reason), 8);
PIN(sizeof(struct cpg_ring_id), 16);
PIN(offsetof(struct cpg_ring_id, nodeid), 0);
PIN(offsetof(struct cpg_ring_id, seq), 8);
PIN(sizeof(struct cpg_iteration_description_t), 140);
PIN(offsetof(struct cpg_iteration_description_t, group), 0);
PIN(offsetof(struct cpg_iteration_description_t, nodeid), 132);
PIN(offsetof(struct cpg_iteration_description_t, pid), 136);
PIN(sizeof(cpg_callbacks_t), 16);
PIN(offsetof(cpg_callbacks_t, cpg_deliver_fn), 0);
PIN(offsetof(cpg_callbacks_t, cpg_confchg_fn), 8);
PIN(sizeof(cpg_model_data_t), 4);
PIN(sizeof(cpg_model_v1_data_t), 40);
PIN(offsetof(cpg_model_v1_data_t, model), 0);
PIN(offsetof(cpg_model_v1_data_t, cpg_deliver_fn), 8);
PIN(offsetof(cpg_model_v1_data_t, cpg_confchg_fn), 16);
PIN(offsetof(cpg_model_v1_data_t, cpg_totem_confchg_fn), 24);
PIN(offsetof(cpg_model_v1_data_t, flags), 32);
PIN(sizeof(cs_name_t), 258);
PIN(sizeof(cs_version_t), 3);
PIN(CPG_MAX_NAME_LENGTH, 128);
PIN(CPG_MEMBERS_MAX, 128);
PIN(CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF, 1);
PIN(CPG_MODEL_V1, 1);
PIN(CPG_TYPE_UNORDERED, 0);
PIN(CPG_TYPE_FIFO, 1);
PIN(CPG_TYPE_AGREED, 2);
PIN(CPG_TYPE_SAFE, 3);
PIN(CPG_FLOW_CONTROL_DISABLED, 0);
PIN(CPG_FLOW_CONTROL_ENABLED, 1);
PIN(CPG_REASON_UNDEFINED, 0);
PIN(CPG_REASON_JOIN, 1);
PIN(CPG_REASON_LEAVE, 2);
PIN(CPG_REASON_NODEDOWN, 3);
PIN(CPG_REASON_NODEUP, 4);
PIN(CPG_REASON_PROCDOWN, 5);
PIN(CPG_ITERATION_NAME_ONLY, 1);
PIN(CPG_ITERATION_ONE_GROUP, 2);
PIN(CPG_ITERATION_ALL, 3);
PIN(CS_DISPATCH_ONE, 1);
PIN(CS_DISPATCH_ALL, 2);
PIN(CS_DISPATCH_BLOCKING, 3);
PIN(CS_DISPATCH_ONE_NONBLOCKING, 4);
PIN(CS_OK, 1);
PIN(CS_ERR_LIBRARY, 2);
PIN(CS_ERR_VERSION, 3);
PIN(CS_ERR_INIT, 4);
PIN(CS_ERR_TIMEOUT, 5);
PIN(CS_ERR_TRY_AGAIN, 6);
PIN(CS_ERR_INVALID_PARAM, 7);
PIN(CS_ERR_NO_MEMORY, 8);
PIN(CS_ERR_BAD_HANDLE, 9);
PIN(CS_ERR_BUSY, 10);
PIN(CS_ERR_ACCESS, 11);
PIN(CS_ERR_NOT_EXIST, 12);
PIN(CS_ERR_NAME_TOO_LONG, 13);
PIN(CS_ERR_EXIST, 14);
PIN(CS_ERR_NO_SPACE, 15);
PIN(CS_ERR_INTERRUPT, 16);
PIN(CS_ERR_NAME_NOT_FOUND, 17);
PIN(CS_ERR_NO_RESOURCES, 18);
PIN(CS_ERR_NOT_SUPPORTED, 19);
PIN(CS_ERR_BAD_OPERATION, 20);
PIN(CS_ERR_FAILED_OPERATION, 21);
PIN(CS_ERR_MESSAGE_ERROR, 22);
PIN(CS_ERR_QUEUE_FULL, 23);
PIN(CS_ERR_QUEUE_NOT_AVAILABLE, 24);
PIN(CS_ERR_BAD_FLAGS, 25);
PIN(CS_ERR_TOO_BIG, 26);
PIN(CS_ERR_NO_SECTIONS, 27);
PIN(CS_ERR_CONTEXT_NOT_FOUND, 28);
PIN(CS_ERR_TOO_MANY_GROUPS, 30);
PIN(CS_ERR_SECURITY, 100);
PIN(CS_MAX_NAME_LENGTH, 256);
PIN(CS_TRACK_CURRENT, 1);
PIN(CS_TRACK_CHANGES, 2);
PIN(CS_TRACK_CHANGES_ONLY, 4);

/* The prototypes, as function pointer types: a mismatch does not compile. */
static cs_error_t (*p_initialize)(cpg_handle_t *, cpg_callbacks_t *) = cpg_initialize;
static cs_error_t (*p_model_initialize)(cpg_handle_t *, cpg_model_t, cpg_model_data_t *, void *) = cpg_model_initialize;
static cs_error_t (*p_finalize)(cpg_handle_t) = cpg_finalize;
static cs_error_t (*p_fd_get)(cpg_handle_t, int *) = cpg_fd_get;
static cs_error_t (*p_max_atomic)(cpg_handle_t, uint32_t *) = cpg_max_atomic_msgsize_get;
static cs_error_t (*p_context_get)(cpg_handle_t, void **) = cpg_context_get;
static cs_error_t (*p_context_set)(cpg_handle_t, void *) = cpg_context_set;
static cs_error_t (*p_dispatch)(cpg_handle_t, cs_dispatch_flags_t) = cpg_dispatch;
static cs_error_t (*p_join)(cpg_handle_t, const struct cpg_name *) = cpg_join;
static cs_error_t (*p_leave)(cpg_handle_t, const struct cpg_name *) = cpg_leave;
static cs_error_t (*p_mcast)(cpg_handle_t, cpg_guarantee_t, const struct iovec *, unsigned int) = cpg_mcast_joined;
static cs_error_t (*p_membership)(cpg_handle_t, struct cpg_name *, struct cpg_address *, int *) = cpg_membership_get;
static cs_error_t (*p_local)(cpg_handle_t, unsigned int *) = cpg_local_get;
static cs_error_t (*p_flow)(cpg_handle_t, cpg_flow_control_state_t *) = cpg_flow_control_state_get;
static cs_error_t (*p_zcb_alloc)(cpg_handle_t, size_t, void **) = cpg_zcb_alloc;
static cs_error_t (*p_zcb_free)(cpg_handle_t, void *) = cpg_zcb_free;
static cs_error_t (*p_zcb_mcast)(cpg_handle_t, cpg_guarantee_t, void *, size_t) = cpg_zcb_mcast_joined;
static cs_error_t (*p_iter_init)(cpg_handle_t, cpg_iteration_type_t, const struct cpg_name *, cpg_iteration_handle_t *) = cpg_iteration_initialize;
static cs_error_t (*p_iter_next)(cpg_iteration_handle_t, struct cpg_iteration_description_t *) = cpg_iteration_next;
static cs_error_t (*p_iter_fin)(cpg_iteration_handle_t) = cpg_iteration_finalize;
static cpg_deliver_fn_t p_deliver_t;
static cpg_confchg_fn_t p_confchg_t;
static cpg_totem_confchg_fn_t p_totem_t;

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t n, uint32_t p, void *m, size_t l)
{
	(void)h; (void)g; (void)n; (void)p; (void)m; (void)l;
}

static void confchg(cpg_handle_t h, const struct cpg_name *g, const struct cpg_address *m, size_t nm,
		    const struct cpg_address *l, size_t nl, const struct cpg_address *j, size_t nj)
{
	(void)h; (void)g; (void)m; (void)nm; (void)l; (void)nl; (void)j; (void)nj;
}

static void totem(cpg_handle_t h, struct cpg_ring_id r, uint32_t n, const uint32_t *m)
{
	(void)h; (void)r; (void)n; (void)m;
}

int main(void)
{
	p_deliver_t = deliver;
	p_confchg_t = confchg;
	p_totem_t = totem;
	(void)p_initialize; (void)p_model_initialize; (void)p_finalize; (void)p_fd_get;
	(void)p_max_atomic; (void)p_context_get; (void)p_context_set; (void)p_dispatch; (void)p_join;
	(void)p_leave; (void)p_mcast; (void)p_membership; (void)p_local; (void)p_flow;
	(void)p_zcb_alloc; (void)p_zcb_free; (void)p_zcb_mcast; (void)p_iter_init; (void)p_iter_next;
	(void)p_iter_fin; (void)p_deliver_t; (void)p_confchg_t; (void)p_totem_t;
	SHOW(sizeof(struct cpg_name));
	SHOW(sizeof(struct cpg_address));
	SHOW(sizeof(struct cpg_ring_id));
	SHOW(offsetof(struct cpg_ring_id, seq));
	SHOW(sizeof(struct cpg_iteration_description_t));
	SHOW(sizeof(cpg_callbacks_t));
	SHOW(sizeof(cpg_model_data_t));
	SHOW(sizeof(cpg_model_v1_data_t));
	SHOW(offsetof(cpg_model_v1_data_t, flags));
	SHOW(sizeof(cs_name_t));
	SHOW(sizeof(cs_version_t));
	SHOW(sizeof(cs_time_t));
	SHOW(CPG_MAX_NAME_LENGTH);
	SHOW(CPG_MEMBERS_MAX);
	SHOW(CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF);
	SHOW(CPG_TYPE_SAFE);
	SHOW(CPG_REASON_PROCDOWN);
	SHOW(CPG_ITERATION_ALL);
	SHOW(CS_DISPATCH_ONE_NONBLOCKING);
	SHOW(CS_ERR_TOO_MANY_GROUPS);
	SHOW(CS_ERR_SECURITY);
	SHOW(CS_TIME_END);
	SHOW(CS_TIME_NS_IN_SEC);
	SHOW(CS_IPC_TIMEOUT_MS);
	printf(CS_PRI_NODE_ID " " CS_PRI_RING_ID "\n", (uint32_t)7, (uint32_t)1, (uint64_t)0x10);
	return 0;
}
