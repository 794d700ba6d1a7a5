// This rank's failure record (core/failure.h) for `geopipe launch --max-restarts`: written when
// geopipe-train stops on an error, and — from a signal handler with a record prepared in
// advance — when the launcher terminates it (SIGTERM) because another rank failed. Nothing is
// written unless the launcher set GEOPIPE_FAILURE_DIR.
#pragma once

#include <geopipe/core/plan.h>

#include <exception>

namespace geopipe::train {

// Once the plan is known: prepares the "terminated" record and installs the SIGTERM handler.
void arm_failure_report(int rank, const Plan& plan);
// The record of the error this rank stops on (timeout with the peer it waited for, bad input, error).
void report_failure(int rank, const std::exception& error);

}  // namespace geopipe::train
