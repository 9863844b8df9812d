"""Mirror redirector for the SME Server (Koozali) download network."""
