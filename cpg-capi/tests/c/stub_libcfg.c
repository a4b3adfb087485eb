/*
 * A stand-in for Corosync's libcfg.so.7, for the corosync-cpgtool test
 * only: corosync-cpgtool (unmodified) initializes Corosync's cfg service
 * to print each member's node addresses and exits if that fails, which it
 * does whenever no corosync runs. With this library first in
 * LD_LIBRARY_PATH the tool's cfg calls succeed and know no address, so its
 * listing shows what libcpg.so.4 (ours, talking to cpgd) reports. Only the
 * three functions the tool calls, with the symbol versions it asks for.
 */
#include <stdint.h>

typedef uint64_t corosync_cfg_handle_t;

int corosync_cfg_initialize(corosync_cfg_handle_t *handle, const void *callbacks);
int corosync_cfg_finalize(corosync_cfg_handle_t handle);
int corosync_cfg_get_node_addrs(corosync_cfg_handle_t handle, unsigned int nodeid,
				 int max_addrs, int *num_addrs, void *addrs);

int corosync_cfg_initialize(corosync_cfg_handle_t *handle, const void *callbacks)
{
	(void)callbacks;
	*handle = 1;
	return 1; /* CS_OK */
}

int corosync_cfg_finalize(corosync_cfg_handle_t handle)
{
	(void)handle;
	return 1;
}

int corosync_cfg_get_node_addrs(corosync_cfg_handle_t handle, unsigned int nodeid,
				 int max_addrs, int *num_addrs, void *addrs)
{
	(void)handle;
	(void)nodeid;
	(void)max_addrs;
	(void)addrs;
	*num_addrs = 0;
	return 12; /* CS_ERR_NOT_EXIST: no address known */
}
