"""Code that runs inside a processing job: ``python -m prepflow.processing``.

Nothing here imports the orchestrator, the stores or any AWS client. The step works on local
folders only, as any script under the SageMaker Processing container contract does.
"""
