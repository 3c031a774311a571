"""Code that runs inside a processing job: ``python -m prepflow.processing``.

Nothing here imports the orchestrator, the stores or any AWS client: the step sees only
local folders, as any script under the SageMaker Processing container contract does.
"""
