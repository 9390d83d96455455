"""The JSON Schema of a job, POST /api/jobs's body on the OpenAPI page: the settings a job may carry
and the server's own keys."""


def job_body_schema() -> dict:
    from connectome.pruning.settings import PruneSettings
    from connectome.settings import job_schema

    schema = job_schema(PruneSettings)
    schema["properties"] = {
        "command": {"type": "string", "enum": ["prune"], "default": "prune"},
        "recipe": {"type": "string", "description": "A recipe of the project (or a file under a data root); "
                                                    "the body's fields override it."},
        "nproc_per_node": {"type": "integer", "minimum": 1, "default": 1, "description": "Ranks under torchrun."},
        **schema["properties"]}
    schema["description"] = "model and remove are required, in the body or in the recipe."
    schema["required"] = []
    return schema
