/*-------------------------------------------------------------------------
 * stop_watchdog.h
 *	  A deadline on the engine's stop: past it, the engine exits and its
 *	  supervisor starts a new one.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_STOP_WATCHDOG_H
#define IQ_STOP_WATCHDOG_H

/* the longest a stop of the pipeline may take (its own waits are bounded lower) */
#define IQ_STOP_DEADLINE_MS		60000

/* from now on, the engine exits with IQ_ENGINE_EXIT_STOP_HUNG at timeout_ms */
extern void iq_stop_watchdog_arm(int timeout_ms);
/* the stop ended in time */
extern void iq_stop_watchdog_disarm(void);

#endif							/* IQ_STOP_WATCHDOG_H */
