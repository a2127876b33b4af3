"""ctypes declarations of the moecast C API (moecast_c.h, ABI version 1).

Thin on purpose: the structs and function signatures of libmoecast.so, plus
`load()` which checks the ABI version and `check()` which turns a status into
a MoecastError. Arrays are passed as numpy arrays (C-contiguous float64 /
int32) via `ptr()`.

    lib = moecast_ctypes.load("/usr/local/lib/libmoecast.so")
    engine = ctypes.c_void_p()
    moecast_ctypes.check(lib, lib.moecast_engine_create(None, ctypes.byref(engine)))

Thread-safety: as the C API (an engine may be shared between threads; the
last error is per thread, and ctypes runs each call on the calling thread).
"""
import ctypes
from ctypes import (POINTER, Structure, byref, c_char, c_char_p, c_double,
                    c_int32, c_int64, c_size_t, c_uint32, c_void_p)

ABI_VERSION = 1

OK = 0
INVALID_ARGUMENT = 3
NOT_FOUND = 5
ALREADY_EXISTS = 6
RESOURCE_EXHAUSTED = 8
FAILED_PRECONDITION = 9
INTERNAL = 13

INGEST_COMMITTED, INGEST_PENDING, INGEST_DUPLICATE = 0, 1, 2
PLACEMENT_DEFAULT, PLACEMENT_EPLB = 0, 1


class EngineOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("max_jobs", c_int32),
        ("history_capacity_steps", c_int32),
        ("max_pending_steps", c_int32),
        ("health_window_steps", c_int32),
        ("health_bootstrap_replicates", c_int32),
        ("dead_window_steps", c_int32),
        ("max_job_history_bytes", c_int64),
        ("max_total_history_bytes", c_int64),
        ("source_timeout_s", c_double),
        ("idle_job_expiry_s", c_double),
    ]


class JobSpec(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("job_id", c_char_p),
        ("num_layers", c_int32),
        ("num_experts", c_int32),
        ("top_k", c_int32),
        ("num_sources", c_int32),
        ("step_unit", c_int32),
        ("router", c_int32),
        ("forecasting", c_int32),
        ("health", c_int32),
        ("predictors", POINTER(c_char_p)),
        ("num_predictors", c_size_t),
        ("horizons", POINTER(c_int32)),
        ("num_horizons", c_size_t),
        ("aux_loss_coef", c_double),
        ("router_temperature", c_double),
        ("entropy_weight", c_double),
        ("oracle_weight", c_double),
        ("balance_weight", c_double),
    ]


class JobInfo(Structure):
    _fields_ = [
        ("num_layers", c_int32),
        ("num_experts", c_int32),
        ("top_k", c_int32),
        ("num_sources", c_int32),
        ("committed_steps", c_int64),
        ("first_step", c_int64),
        ("last_step", c_int64),
        ("gaps", c_int64),
        ("missing_steps", c_int64),
        ("incomplete_steps", c_int64),
        ("duplicate_calls", c_int64),
        ("rejected_calls", c_int64),
        ("pending_steps", c_int64),
        ("tokens", c_double),
        ("history_bytes", c_int64),
        ("forecast_bytes", c_int64),
    ]


class IngestResult(Structure):
    _fields_ = [
        ("outcome", c_int32),
        ("num_committed", c_int32),
        ("first_committed_step", c_int64),
        ("last_committed_step", c_int64),
        ("num_incomplete", c_int32),
        ("gap_steps", c_int64),
        ("note", c_char * 256),
    ]


class MigrationModel(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("bytes_per_expert", c_double),
        ("intra_node_bandwidth", c_double),
        ("inter_node_bandwidth", c_double),
        ("tokens_per_step", c_double),
        ("time_per_token_s", c_double),
        ("horizon_steps", c_double),
        ("overlap", c_int32),
        ("overlap_cost_fraction", c_double),
        ("transient_margin", c_double),
    ]


class PlacementRequest(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("num_slots", c_int32),
        ("num_gpus", c_int32),
        ("num_nodes", c_int32),
        ("num_groups", c_int32),
        ("excluded_gpus", POINTER(c_int32)),
        ("num_excluded_gpus", c_size_t),
        ("current_phy2log", POINTER(c_int32)),
        ("num_current_phy2log", c_size_t),
        ("mode", c_int32),
        ("move_budget", c_int64),
        ("bytes_per_expert", c_int64),
        ("max_extra_experts_per_gpu", c_int32),
        ("horizon", c_int32),
        ("predictor", c_char_p),
        ("upper_bounds_when_transient", c_int32),
        ("interval_level", c_double),
        ("migration", POINTER(MigrationModel)),
    ]


class PlacementSummary(Structure):
    _fields_ = [
        ("as_of_step", c_int64),
        ("job_state", c_int32),
        ("horizon", c_int32),
        ("num_layers", c_int32),
        ("num_experts", c_int32),
        ("num_slots", c_int32),
        ("num_gpus", c_int32),
        ("num_nodes", c_int32),
        ("max_replicas", c_int32),
        ("num_upper_bound_layers", c_int32),
        ("num_transfers", c_int32),
        ("num_stages", c_int32),
        ("balancedness", c_double),
        ("balancedness_summed", c_double),
        ("max_over_mean", c_double),
        ("moved_experts", c_int64),
        ("moved_bytes", c_int64),
        ("forced_moves", c_int64),
        ("has_current", c_int32),
        ("current_balancedness", c_double),
        ("current_max_over_mean", c_double),
        ("has_decision", c_int32),
        ("rebalance", c_int32),
        ("step_time_current_s", c_double),
        ("step_time_proposed_s", c_double),
        ("saved_s", c_double),
        ("migration_s", c_double),
        ("cost_s", c_double),
        ("required_s", c_double),
    ]


class Transfer(Structure):
    _fields_ = [
        ("layer", c_int32),
        ("expert", c_int32),
        ("from_gpu", c_int32),
        ("to_gpu", c_int32),
        ("bytes", c_int64),
        ("stage", c_int32),
    ]


class LayerHealth(Structure):
    _fields_ = [
        ("window_step", c_int64),
        ("window_steps", c_int32),
        ("phase", c_int32),
        ("has_gamma", c_int32),
        ("gamma_f", c_double),
        ("gamma_ci_low_f", c_double),
        ("gamma_ci_high_f", c_double),
        ("max_over_mean", c_double),
        ("max_vio", c_double),
        ("coefficient_of_variation", c_double),
        ("normalized_entropy", c_double),
        ("num_dead_experts", c_int32),
        ("gamma_status", c_char * 128),
    ]


class HealthSummary(Structure):
    _fields_ = [
        ("as_of_step", c_int64),
        ("num_layers", c_int32),
        ("total_dead_experts", c_int32),
        ("e_kind", c_int32),
        ("e_value", c_double),
        ("e_below_threshold", c_int32),
    ]


_PD = POINTER(c_double)
_PI32 = POINTER(c_int32)
_PI64 = POINTER(c_int64)
_S = c_int32  # moecast_status

_SIGNATURES = {
    "moecast_version": (c_char_p, []),
    "moecast_abi_version": (c_int32, []),
    "moecast_status_name": (c_char_p, [c_int32]),
    "moecast_last_error": (c_char_p, []),
    "moecast_last_status": (_S, []),
    "moecast_engine_options_init": (None, [POINTER(EngineOptions)]),
    "moecast_engine_create": (_S, [POINTER(EngineOptions), POINTER(c_void_p)]),
    "moecast_engine_destroy": (None, [c_void_p]),
    "moecast_job_spec_init": (None, [POINTER(JobSpec)]),
    "moecast_register_job": (_S, [c_void_p, POINTER(JobSpec)]),
    "moecast_delete_job": (_S, [c_void_p, c_char_p]),
    "moecast_get_job_info": (_S, [c_void_p, c_char_p, POINTER(JobInfo)]),
    "moecast_num_jobs": (c_int64, [c_void_p]),
    "moecast_ingest": (_S, [c_void_p, c_char_p, c_int64, c_int32, _PD,
                            c_size_t, _PD, c_size_t, _PD,
                            POINTER(IngestResult)]),
    "moecast_flush_pending": (_S, [c_void_p, c_char_p, _PI64]),
    "moecast_forecast_create": (_S, [c_void_p, c_char_p, _PI32, c_size_t,
                                     c_char_p, c_double, POINTER(c_void_p)]),
    "moecast_forecast_destroy": (None, [c_void_p]),
    "moecast_forecast_shape": (_S, [c_void_p, _PI32, _PI32, _PI32, _PI64,
                                    _PI32]),
    "moecast_forecast_horizon": (_S, [c_void_p, c_int32, _PI32]),
    "moecast_forecast_layer_state": (_S, [c_void_p, c_int32, _PI32, _PD]),
    "moecast_forecast_values": (_S, [c_void_p, c_int32, c_int32, _PD, _PD,
                                     _PD, c_size_t, _PI32]),
    "moecast_forecast_predictor": (c_char_p, [c_void_p, c_int32, c_int32]),
    "moecast_forecast_into": (_S, [c_void_p, c_char_p, c_int32, c_char_p,
                                   c_double, _PD, _PD, _PD, c_size_t]),
    "moecast_get_state": (_S, [c_void_p, c_char_p, _PI64, _PI32, _PI32, _PD,
                               c_size_t]),
    "moecast_migration_model_init": (None, [POINTER(MigrationModel)]),
    "moecast_placement_request_init": (None, [POINTER(PlacementRequest)]),
    "moecast_recommend_placement": (_S, [c_void_p, c_char_p,
                                         POINTER(PlacementRequest),
                                         POINTER(c_void_p)]),
    "moecast_placement_destroy": (None, [c_void_p]),
    "moecast_placement_get_summary": (_S, [c_void_p,
                                           POINTER(PlacementSummary)]),
    "moecast_placement_phy2log": (_S, [c_void_p, _PI32, c_size_t]),
    "moecast_placement_logcnt": (_S, [c_void_p, _PI32, c_size_t]),
    "moecast_placement_gpu_loads": (_S, [c_void_p, _PD, c_size_t]),
    "moecast_placement_loads": (_S, [c_void_p, _PD, c_size_t]),
    "moecast_placement_transfers": (_S, [c_void_p, POINTER(Transfer),
                                         c_size_t]),
    "moecast_placement_decision_reason": (c_char_p, [c_void_p]),
    "moecast_health": (_S, [c_void_p, c_char_p, POINTER(HealthSummary),
                            POINTER(LayerHealth), c_size_t]),
}


class MoecastError(Exception):
    """A failed moecast_* call: .code (int) and .message (str)."""

    def __init__(self, code, name, message):
        super().__init__(f"{name}: {message}")
        self.code = code
        self.message = message


def load(path):
    """Loads libmoecast.so at `path`, declares every signature, and checks
    that the library's ABI version is the one these declarations follow."""
    lib = ctypes.CDLL(path)
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    if lib.moecast_abi_version() != ABI_VERSION:
        raise RuntimeError(
            f"{path} has ABI version {lib.moecast_abi_version()}, "
            f"these bindings follow {ABI_VERSION}")
    return lib


def check(lib, status):
    """Raises MoecastError for a non-OK status (with the thread's message)."""
    if status != OK:
        raise MoecastError(status, lib.moecast_status_name(status).decode(),
                           lib.moecast_last_error().decode())
    return status


def ptr(array, ctype):
    """A pointer to a C-contiguous numpy array's data (None for None)."""
    if array is None:
        return None
    if not array.flags["C_CONTIGUOUS"]:
        raise ValueError("array must be C-contiguous")
    return array.ctypes.data_as(POINTER(ctype))
