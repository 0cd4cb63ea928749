"""Ray and MLflow plumbing shared by every stage: starting/attaching Ray, tracking, job submission, output filters."""
