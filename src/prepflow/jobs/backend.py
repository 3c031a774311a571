"""The job backend port: where processing jobs run (the local runner, or SageMaker)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from prepflow.jobs.spec import JobDescription, ProcessingJobSpec


class JobBackend(ABC):
    """Runs processing jobs; job names are unique, as SageMaker makes them per account."""

    @abstractmethod
    def submit(self, spec: ProcessingJobSpec) -> None:
        """Start the job; raise JobExistsError if the name is taken, JobSpecError if invalid."""

    @abstractmethod
    def describe(self, job_name: str) -> JobDescription:
        """Return the job's current state; raise JobNotFoundError for an unknown name."""

    @abstractmethod
    def stop(self, job_name: str) -> None:
        """Ask a running job to stop; a job already ended is left as it is."""
