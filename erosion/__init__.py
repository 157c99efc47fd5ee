"""erosion: bone erosion scoring for rheumatoid arthritis from X-ray crops of finger joints, on Ray."""
