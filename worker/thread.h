/*-------------------------------------------------------------------------
 * thread.h
 *	  Threads of the worker process that are not PostgreSQL's.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_THREAD_H
#define IQ_THREAD_H

#include <pthread.h>

/* pthread_create with every signal blocked in the new thread */
extern int	iq_thread_create(pthread_t *thread, const pthread_attr_t *attr,
							 void *(*start) (void *), void *arg);

#endif							/* IQ_THREAD_H */
