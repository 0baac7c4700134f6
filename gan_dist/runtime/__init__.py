"""Where the loop runs: worker contexts, the local and Ray backends, storage URIs."""
